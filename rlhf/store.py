"""The run's durable store: clips, queries (pairs of clips) and labels.

Two backends, one schema and one set of SQL: an SQLite file in the run directory (the
default; WAL mode lets the trainer and one or more viewers, separate processes on one
machine, share it) or a PostgreSQL server (``store.url``; ``rlhf.store_pg``), for people
labelling one run from several machines. Every label is committed in its own transaction
the moment it is given. Labels are append-only: undo appends a retraction that points at
the label it takes back.

A label's ``choice`` is about the query's own clip order: ``a`` (clip_a is better), ``b``,
``equal`` or ``skip``. Where the viewer showed the clips (``shown_swapped``) is recorded
beside it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from rlhf.clips import Clip

# Split out by job; re-exported, so ``from rlhf.store import X`` keeps working.
from rlhf.store_claims import Claims
from rlhf.store_errors import SQLITE_BUSY as SQLITE_BUSY
from rlhf.store_errors import SQLITE_CORRUPT as SQLITE_CORRUPT
from rlhf.store_errors import SQLITE_ERROR as SQLITE_ERROR
from rlhf.store_errors import SQLITE_FULL as SQLITE_FULL
from rlhf.store_errors import SQLITE_IOERR as SQLITE_IOERR
from rlhf.store_errors import SQLITE_LOCKED as SQLITE_LOCKED
from rlhf.store_errors import SQLITE_NOTADB as SQLITE_NOTADB
from rlhf.store_errors import SQLITE_READONLY as SQLITE_READONLY
from rlhf.store_errors import SQLITE_READONLY_DBMOVED as SQLITE_READONLY_DBMOVED
from rlhf.store_errors import (
    RetryPolicy,
    StoreError,
    _guarded,
    _read_only,
    _Transaction,
    _writable,
    diagnose,
)
from rlhf.store_errors import StoreUnavailable as StoreUnavailable
from rlhf.store_open import Opening
from rlhf.store_pg import PgLocation, PgTransaction, is_url
from rlhf.store_queries import Queries
from rlhf.store_schema import (
    AWAITED,
    CANDIDATES,
    LIVE_LABELS,
    META,
    PENDING,
    STANDING_LABELS,
    AnsweredPair,
    Dialect,
    Label,
    StoreCounts,
    decode_arrays,
    encode_arrays,
)
from rlhf.store_schema import SCHEMA_VERSION as SCHEMA_VERSION
from rlhf.store_schema import Query as Query

CHOICES: tuple[str, ...] = ("a", "b", "equal", "skip")
# Preference target for each trainable choice: the probability that clip_a is better.
MU = {"a": 1.0, "b": 0.0, "equal": 0.5}


class Store(Opening, Claims, Queries):
    """One run's store: an SQLite file (``location`` a path) or a run's schema on a
    PostgreSQL server (a ``PgLocation``). Open one Store per process (and per thread).

    ``readonly``: for readers (``rlhf status``, a screenshot): never writes, and opens a run
    whose directory or file cannot be written. SQLite's WAL mode needs a ``-shm`` file
    beside the store; where the directory is not writable and there is none, the store is
    opened as immutable (a snapshot: nobody can be writing to it there anyway).

    Every database error becomes a one-line StoreError that says what is wrong (a full
    disk, a read-only file, a damaged file, an unreachable server) and what to do. The
    viewers' claims on queries are ``Claims``' methods (``rlhf.store_claims``).

    An older store is brought to the current schema when a writer opens it (an SQLite file
    is copied beside itself first); a newer one is refused.
    """

    dialect: Dialect = "sqlite"
    retry: RetryPolicy | None = None
    """Set by the trainer: how long a call keeps trying while the server cannot be reached
    (None: a ``StoreUnavailable`` at once, as a viewer wants, which keeps its window)."""

    def __init__(self, location: str | Path | PgLocation, create: bool = False,
                 timeout: float = 30.0, readonly: bool = False):
        self.readonly = readonly
        if create and readonly:
            raise ValueError("a read-only Store cannot create the store")
        if is_url(location):
            raise StoreError(f"{location}: a PostgreSQL store also needs the run's name "
                             "(rlhf label URL --run NAME)")
        if isinstance(location, PgLocation):
            self._open_pg(location, create, timeout)
            return
        self.path: Path | PgLocation = Path(location)
        self.location: Path | PgLocation = self.path
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no store here (is this a run directory?)")
        wal = self.path.with_name(self.path.name + "-wal")
        if not create and self.path.is_file() and self.path.stat().st_size == 0 and not (
                wal.is_file() and wal.stat().st_size > 0):  # a WAL may hold what was committed
            raise StoreError(f"{self.path} is empty (0 bytes): it holds no labels (a trainer "
                             "stopped before creating it, or the file was truncated); restore "
                             "it from a copy if this run had labels")
        if not readonly and self.path.exists() and not _writable(self.path):
            # A writer fails now, not at its first label (a person's answer would be lost).
            raise StoreError(_read_only(self.path))
        try:
            if readonly:
                self.db = self._connect_readonly(timeout)
            else:
                self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(diagnose(self.path, e, "open")) from None
        try:
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._check_or_create(create)
        except (sqlite3.Error, StoreError) as e:
            self.db.close()  # a refused store is not left open
            if isinstance(e, StoreError):
                raise
            raise StoreError(diagnose(self.path, e, "open")) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> _Transaction | PgTransaction:
        if self.dialect == "postgresql":
            return PgTransaction(self.db)  # type: ignore[arg-type]
        return _Transaction(self.db, self.path)  # type: ignore[arg-type]

    def _has_table(self, name: str) -> bool:
        if self.dialect == "postgresql":
            return self.db.has_table(name)  # type: ignore[attr-defined]
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                               (name,)).fetchone() is not None

    # -- what the run says about itself ---------------------------------------------------

    @_guarded
    def put_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` (the run's config, for a viewer on another machine
        that has only the store); replaces an earlier value of that key."""
        with self.transaction():
            self.db.execute(META)
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))

    @_guarded
    def get_meta(self, key: str) -> str | None:
        if not self._has_table("meta"):
            return None
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- clips ---------------------------------------------------------------------------

    @_guarded
    def add_clips(self, clips: list[Clip]) -> list[Clip]:
        """Store clips in one transaction; returns them with their ids set."""
        with self.transaction():
            return self._insert_clips(clips)

    def _insert_clips(self, clips: list[Clip]) -> list[Clip]:
        out = []
        now = time.time()
        for clip in clips:
            blob = encode_arrays(obs=clip.obs, actions=clip.actions, rewards=clip.rewards,
                                 dones=clip.dones, last_obs=clip.last_obs,
                                 states=clip.states, frames=clip.frames)
            (cid,) = self.db.execute(
                "INSERT INTO clips (env_step, length, true_return, data, created) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (int(clip.env_step), len(clip), float(clip.true_return), blob, now)).fetchone()
            out.append(clip.with_id(cid))
        return out

    @_guarded
    def add_candidate_clips(self, clips: list[Clip],
                            params: list[dict[str, float | int]]) -> list[Clip]:
        """A tuning run's clips with the parameters whose behaviour each shows, in one
        transaction (a clip never lands without its parameters); returns them with ids."""
        if len(clips) != len(params):
            raise ValueError(f"{len(clips)} clips but {len(params)} parameter sets")
        with self.transaction():
            self.db.execute(CANDIDATES)
            out = self._insert_clips(clips)
            self.db.executemany("INSERT INTO candidates (clip_id, params) VALUES (?, ?)",
                                [(c.id, json.dumps(p)) for c, p in zip(out, params,
                                                                       strict=True)])
        return out

    @_guarded
    def candidate_params(self) -> dict[int, dict[str, float | int]]:
        """clip id -> the parameters its behaviour was made with (a tuning run's clips; {}
        for an RL run's store)."""
        if not self._has_table("candidates"):
            return {}
        out = {}
        for cid, text in self.db.execute("SELECT clip_id, params FROM candidates"):
            try:
                params = json.loads(text)
            except ValueError:
                params = None
            if not isinstance(params, dict):
                raise StoreError(f"{self.path}: the parameters of clip {cid} are damaged "
                                 f"({text[:40]!r}); the store is corrupt: restore it from a "
                                 "copy")
            out[cid] = params
        return out

    @_guarded
    def clip_ids(self) -> list[int]:
        """Every stored clip's id, in the order stored."""
        return [i for (i,) in self.db.execute("SELECT id FROM clips ORDER BY id")]

    @_guarded
    def get_clips(self, ids: list[int]) -> list[Clip]:
        """Clips by id, in the order asked."""
        if not ids:
            return []
        found: dict[int, Clip] = {}
        unique = sorted(set(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for cid, env_step, blob in self.db.execute(
                    f"SELECT id, env_step, data FROM clips WHERE id IN ({marks})", chunk):
                try:
                    found[cid] = Clip(env_step=env_step, id=cid, **decode_arrays(blob))
                except (ValueError, TypeError, KeyError, OSError, EOFError, zlib.error,
                        zipfile.BadZipFile) as e:  # SQLite's pages are fine, the blob is not
                    raise StoreError(f"{self.path}: the data of clip {cid} is damaged "
                                     f"({' '.join(str(e).split())}): the store is corrupt; "
                                     "restore it from a copy") from None
        missing = [i for i in unique if i not in found]
        if missing:
            raise StoreError(f"{self.path}: no clip with id {missing[0]}")
        return [found[i] for i in ids]

    # -- labels --------------------------------------------------------------------------

    @_guarded
    def add_label(self, query_id: int, choice: str, teacher: str,
                  shown_swapped: bool | None = None, response_time: float | None = None,
                  annotator: str | None = None, created: float | None = None) -> int:
        """Append one label, committed before this returns. Returns the label's id.
        ``annotator``: who gave it (default: ``teacher``, a simulated teacher's name);
        ``created``: when (default: now; an import keeps the original time)."""
        self._check_choice(choice)
        with self.transaction():
            label_id = self._append_label(query_id, choice, teacher, shown_swapped,
                                          response_time, annotator=annotator, created=created)
        assert label_id is not None
        return label_id

    @_guarded
    def retract(self, label_id: int, teacher: str, annotator: str | None = None) -> int:
        """Take a label back (undo) by appending a retraction; nothing is deleted."""
        with self.transaction():
            retracted = self._append_retraction(label_id, teacher, live=False,
                                                annotator=annotator)
            if retracted is None:
                raise StoreError(f"cannot retract label {label_id}: no such label")
        return retracted[1]

    @staticmethod
    def _check_choice(choice: str) -> None:
        if choice not in CHOICES:
            raise StoreError(f"label choice must be one of {CHOICES}, got {choice!r}")

    def _append_label(self, query_id: int, choice: str, teacher: str,
                      shown_swapped: bool | None, response_time: float | None,
                      only_pending: bool = False, annotator: str | None = None,
                      created: float | None = None) -> int | None:
        """The one way an answer is stored, inside the caller's transaction: the new label's
        id, or None, with ``only_pending``, where a label already stands for the query."""
        row = self.db.execute(f"SELECT {PENDING} FROM queries q WHERE q.id=?",
                              (query_id,)).fetchone()
        if row is None:
            raise StoreError(f"cannot label query {query_id}: no such query in {self.path}")
        if only_pending and not row[0]:
            return None
        return self._insert(query_id, choice, teacher,
                            None if shown_swapped is None else int(shown_swapped), response_time,
                            annotator=annotator, created=created)

    def _append_retraction(self, label_id: int, teacher: str, live: bool,
                           annotator: str | None = None) -> tuple[int, int] | None:
        """The one way a label is taken back, inside the caller's transaction: (its query's
        id, the retraction's id), or None where ``label_id`` is no label (with ``live``: no
        label nobody took back)."""
        source = f"({LIVE_LABELS}) lv" if live else "labels"
        row = self.db.execute(f"SELECT query_id FROM {source} WHERE id=? AND choice != "
                              "'retract'", (label_id,)).fetchone()
        if row is None:
            return None
        return row[0], self._insert(row[0], "retract", teacher, retracts=label_id,
                                    annotator=annotator)

    def _insert(self, query_id: int, choice: str, teacher: str, shown_swapped: int | None = None,
                response_time: float | None = None, retracts: int | None = None,
                annotator: str | None = None, created: float | None = None) -> int:
        (label_id,) = self.db.execute(
            "INSERT INTO labels (query_id, choice, teacher, created, shown_swapped, "
            "response_time, retracts, annotator) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (int(query_id), choice, teacher, time.time() if created is None else float(created),
             shown_swapped,
             None if response_time is None else float(response_time), retracts,
             teacher if annotator is None else annotator)).fetchone()
        return int(label_id)

    @_guarded
    def labels(self) -> list[Label]:
        """The standing label of every labelled query (latest, not retracted), by label id."""
        rows = self.db.execute(
            f"SELECT id, query_id, choice, teacher, created, shown_swapped, response_time, "
            f"{self._annotator} FROM ({STANDING_LABELS}) st ORDER BY id")
        return [Label(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else bool(r[5]), r[6],
                      r[7]) for r in rows]

    @property
    def _annotator(self) -> str:
        """The annotator column, or NULL in an older store read as it is (a reader)."""
        return "annotator" if self.version >= 2 else "NULL"

    @_guarded
    def answered(self) -> list[AnsweredPair]:
        """Every standing label with its pair and the clips' true returns, by label id."""
        return self._answered()

    def _answered(self, where: str = "") -> list[AnsweredPair]:
        rows = self.db.execute(
            f"SELECT e.id, e.query_id, q.clip_a, q.clip_b, e.choice, {self._annotator}, "
            "e.response_time, e.created, ca.true_return, cb.true_return, e.teacher, "
            "e.shown_swapped "
            f"FROM ({STANDING_LABELS}) e JOIN queries q ON q.id = e.query_id "
            "JOIN clips ca ON ca.id = q.clip_a JOIN clips cb ON cb.id = q.clip_b "
            f"{where} ORDER BY e.id")
        return [AnsweredPair(*row[:-1], None if row[-1] is None else bool(row[-1]))
                for row in rows]

    @_guarded
    def preferences(self) -> tuple[np.ndarray, np.ndarray]:
        """Trainable labels: pairs (N, 2) of clip ids and targets mu (N,) = P(clip_a better).

        Skips are left out; ties give 0.5. Ordered by label id, so the order is stable as
        labels arrive.
        """
        pairs, mu, _ = self.preferences_by()
        return pairs, mu

    @_guarded
    def preferences_by(self) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """``preferences()`` and who gave each label (N,), read in one statement."""
        rows = self.db.execute(
            f"SELECT q.clip_a, q.clip_b, e.choice, {self._annotator} FROM "
            f"({STANDING_LABELS}) e JOIN queries q ON q.id = e.query_id "
            "WHERE e.choice != 'skip' ORDER BY e.id").fetchall()
        pairs = np.array([(r[0], r[1]) for r in rows], dtype=np.int64).reshape(-1, 2)
        mu = np.array([MU[r[2]] for r in rows], dtype=np.float32)
        return pairs, mu, [r[3] for r in rows]

    @_guarded
    def counts(self) -> StoreCounts:
        """What the store holds, read in one statement (one consistent snapshot)."""
        awaited = (f"(SELECT COUNT(*) FROM queries q WHERE {AWAITED})" if self.version >= 3
                   else "NULL")
        clips, queries, labels, skipped, events, waits = self.db.execute(
            "SELECT (SELECT COUNT(*) FROM clips), (SELECT COUNT(*) FROM queries), "
            f"(SELECT COUNT(*) FROM ({STANDING_LABELS}) st), "
            f"(SELECT COUNT(*) FROM ({STANDING_LABELS}) st WHERE choice='skip'), "
            f"(SELECT COUNT(*) FROM labels), {awaited}").fetchone()
        pending = queries - labels
        return StoreCounts(clips=clips, queries=queries, labels=labels, skipped=skipped,
                           pending=pending, awaited=pending if waits is None else waits,
                           label_events=events)
