"""The run's durable store: clips, queries (pairs of clips) and labels, in one SQLite file.

SQLite in WAL mode lets the trainer and one or more viewers (separate processes) share the
file. Every label is committed in its own transaction the moment it is given. Labels are
append-only: undo appends a retraction that points at the label it takes back.

A label's ``choice`` is about the query's own clip order: ``a`` (clip_a is better), ``b``,
``equal`` or ``skip``. Where the viewer showed the clips (``shown_swapped``) is recorded
beside it.
"""

from __future__ import annotations

import sqlite3
import time
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rlhf.clips import Clip
from rlhf.io import warn_once

# Split out by job; re-exported, so ``from rlhf.store import X`` keeps working.
from rlhf.store_errors import SQLITE_BUSY as SQLITE_BUSY
from rlhf.store_errors import (
    SQLITE_CANTOPEN,
    StoreError,
    _guarded,
    _read_only,
    _Transaction,
    _writable,
    diagnose,
)
from rlhf.store_errors import SQLITE_CORRUPT as SQLITE_CORRUPT
from rlhf.store_errors import SQLITE_ERROR as SQLITE_ERROR
from rlhf.store_errors import SQLITE_FULL as SQLITE_FULL
from rlhf.store_errors import SQLITE_IOERR as SQLITE_IOERR
from rlhf.store_errors import SQLITE_LOCKED as SQLITE_LOCKED
from rlhf.store_errors import SQLITE_NOTADB as SQLITE_NOTADB
from rlhf.store_errors import SQLITE_READONLY as SQLITE_READONLY
from rlhf.store_errors import SQLITE_READONLY_DBMOVED as SQLITE_READONLY_DBMOVED
from rlhf.store_schema import _SCHEMA, SCHEMA_VERSION, decode_arrays, encode_arrays

Choice = Literal["a", "b", "equal", "skip"]
CHOICES: tuple[str, ...] = ("a", "b", "equal", "skip")
# Preference target for each trainable choice: the probability that clip_a is better.
MU = {"a": 1.0, "b": 0.0, "equal": 0.5}


@dataclass(frozen=True)
class Query:
    """A pair of stored clips to be compared."""

    id: int
    clip_a: int
    clip_b: int
    iteration: int


@dataclass(frozen=True)
class Label:
    id: int
    query_id: int
    choice: str
    teacher: str
    created: float
    shown_swapped: bool | None
    response_time: float | None


class Store:
    """One SQLite database per run. Open one Store per process (and per thread).

    ``readonly``: for readers (``rlhf status``, a screenshot): never writes, and opens a run
    whose directory or file cannot be written. SQLite's WAL mode needs a ``-shm`` file
    beside the store; where the directory is not writable and there is none, the store is
    opened as immutable (a snapshot: nobody can be writing to it there anyway).

    Every SQLite error becomes a one-line StoreError that says what is wrong (a full disk,
    a read-only file, a damaged file) and what to do.
    """

    def __init__(self, path: str | Path, create: bool = False, timeout: float = 30.0,
                 readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if create and readonly:
            raise ValueError("a read-only Store cannot create the store")
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

    def _connect_readonly(self, timeout: float) -> sqlite3.Connection:
        uri = self.path.absolute().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", timeout=timeout, isolation_level=None, uri=True)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return db
        except sqlite3.OperationalError as e:
            db.close()
            if e.sqlite_errorcode & 0xFF != SQLITE_CANTOPEN or _writable(self.path.parent):
                raise
        # No -shm file and no way to make one: nobody can write here, so a snapshot is exact,
        # except for changes a killed writer left in the -wal file, which SQLite can only
        # read by writing beside it.
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            warn_once(f"{wal} holds changes that cannot be read while {self.path.parent} is "
                      "read-only: what is shown may miss the latest labels (they are not lost)")
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", timeout=timeout,
                               isolation_level=None, uri=True)

    def _check_or_create(self, create: bool) -> None:
        rows = self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        tables = {r[0] for r in rows}
        if "meta" not in tables:
            if tables or not create:
                raise StoreError(f"{self.path}: not an rlhf store (no schema version)")
            with self.transaction():
                for statement in _SCHEMA.split(";"):  # executescript would COMMIT early
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                (str(SCHEMA_VERSION),))
            return
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row and str(row[0]).isdigit() else None
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {row[0] if row else None!r} is "
                             f"not one this rlhf understands (<= {SCHEMA_VERSION}); "
                             "upgrade rlhf to open it")
        check = self.db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StoreError(f"{self.path}: the database is corrupt ({check}); "
                             "restore it from a copy")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self.db, self.path)

    # -- clips ---------------------------------------------------------------------------

    @_guarded
    def add_clips(self, clips: list[Clip]) -> list[Clip]:
        """Store clips in one transaction; returns them with their ids set."""
        out = []
        now = time.time()
        with self.transaction():
            for clip in clips:
                blob = encode_arrays(obs=clip.obs, actions=clip.actions, rewards=clip.rewards,
                                     dones=clip.dones, last_obs=clip.last_obs,
                                     states=clip.states, frames=clip.frames)
                cur = self.db.execute(
                    "INSERT INTO clips (env_step, length, true_return, data, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (clip.env_step, len(clip), clip.true_return, blob, now))
                out.append(clip.with_id(cur.lastrowid))
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

    # -- queries -------------------------------------------------------------------------

    @_guarded
    def add_queries(self, pairs: list[tuple[int, int]], iteration: int) -> list[Query]:
        now = time.time()
        out = []
        with self.transaction():
            for a, b in pairs:
                cur = self.db.execute(
                    "INSERT INTO queries (clip_a, clip_b, iteration, created) VALUES (?,?,?,?)",
                    (int(a), int(b), iteration, now))
                out.append(Query(cur.lastrowid, int(a), int(b), iteration))
        return out

    @_guarded
    def get_query(self, query_id: int) -> Query:
        row = self.db.execute("SELECT id, clip_a, clip_b, iteration FROM queries WHERE id=?",
                              (query_id,)).fetchone()
        if row is None:
            raise StoreError(f"no query with id {query_id} in {self.path}")
        return Query(*row)

    @_guarded
    def asked_pairs(self, clip_ids: list[int]) -> list[tuple[int, int]]:
        """(clip_a, clip_b) of every query among ``clip_ids``."""
        if len(clip_ids) < 2:
            return []
        # Filtered here, not in SQL: an IN (...) list of a large pool's ids would pass
        # SQLite's limit on bound variables, and a run has far fewer queries than clips.
        among = set(clip_ids)
        return [(a, b) for a, b in self.db.execute("SELECT clip_a, clip_b FROM queries")
                if a in among and b in among]

    _EFFECTIVE = """
        SELECT l.* FROM labels l
        WHERE l.choice != 'retract'
          AND NOT EXISTS (SELECT 1 FROM labels r WHERE r.retracts = l.id)
          AND l.id = (SELECT MAX(l2.id) FROM labels l2
                      WHERE l2.query_id = l.query_id AND l2.choice != 'retract'
                        AND NOT EXISTS (SELECT 1 FROM labels r2 WHERE r2.retracts = l2.id))
    """

    @_guarded
    def pending_queries(self, limit: int | None = None) -> list[Query]:
        """Queries without a standing label, oldest first."""
        sql = ("SELECT q.id, q.clip_a, q.clip_b, q.iteration FROM queries q WHERE NOT EXISTS "
               f"(SELECT 1 FROM ({self._EFFECTIVE}) e WHERE e.query_id = q.id) ORDER BY q.id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Query(*row) for row in self.db.execute(sql)]

    # -- labels --------------------------------------------------------------------------

    @_guarded
    def add_label(self, query_id: int, choice: str, teacher: str,
                  shown_swapped: bool | None = None, response_time: float | None = None) -> int:
        """Append one label, committed before this returns. Returns the label's id."""
        if choice not in CHOICES:
            raise StoreError(f"label choice must be one of {CHOICES}, got {choice!r}")
        with self.transaction():
            if self.db.execute("SELECT 1 FROM queries WHERE id=?", (query_id,)).fetchone() is None:
                raise StoreError(f"cannot label query {query_id}: no such query in {self.path}")
            cur = self.db.execute(
                "INSERT INTO labels (query_id, choice, teacher, created, shown_swapped, "
                "response_time) VALUES (?, ?, ?, ?, ?, ?)",
                (query_id, choice, teacher, time.time(),
                 None if shown_swapped is None else int(shown_swapped), response_time))
            return cur.lastrowid

    @_guarded
    def retract(self, label_id: int, teacher: str) -> int:
        """Take a label back (undo) by appending a retraction; nothing is deleted."""
        with self.transaction():
            row = self.db.execute("SELECT query_id, choice FROM labels WHERE id=?",
                                  (label_id,)).fetchone()
            if row is None or row[1] == "retract":
                raise StoreError(f"cannot retract label {label_id}: no such label")
            cur = self.db.execute(
                "INSERT INTO labels (query_id, choice, teacher, created, retracts) "
                "VALUES (?, 'retract', ?, ?, ?)", (row[0], teacher, time.time(), label_id))
            return cur.lastrowid

    @_guarded
    def labels(self) -> list[Label]:
        """The standing label of every labelled query (latest, not retracted), by label id."""
        rows = self.db.execute(
            f"SELECT id, query_id, choice, teacher, created, shown_swapped, response_time "
            f"FROM ({self._EFFECTIVE}) ORDER BY id")
        return [Label(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else bool(r[5]), r[6])
                for r in rows]

    @_guarded
    def preferences(self) -> tuple[np.ndarray, np.ndarray]:
        """Trainable labels: pairs (N, 2) of clip ids and targets mu (N,) = P(clip_a better).

        Skips are left out; ties give 0.5. Ordered by label id, so the order is stable as
        labels arrive.
        """
        rows = self.db.execute(
            f"SELECT q.clip_a, q.clip_b, e.choice FROM ({self._EFFECTIVE}) e "
            "JOIN queries q ON q.id = e.query_id WHERE e.choice != 'skip' ORDER BY e.id").fetchall()
        pairs = np.array([(a, b) for a, b, _ in rows], dtype=np.int64).reshape(-1, 2)
        mu = np.array([MU[c] for _, _, c in rows], dtype=np.float32)
        return pairs, mu

    @_guarded
    def counts(self) -> dict[str, int]:
        one = lambda sql: int(self.db.execute(sql).fetchone()[0])  # noqa: E731
        labelled = one(f"SELECT COUNT(*) FROM ({self._EFFECTIVE})")
        queries = one("SELECT COUNT(*) FROM queries")
        return {
            "clips": one("SELECT COUNT(*) FROM clips"),
            "queries": queries,
            "labels": labelled,
            "skipped": one(f"SELECT COUNT(*) FROM ({self._EFFECTIVE}) WHERE choice='skip'"),
            "pending": queries - labelled,
            "label_events": one("SELECT COUNT(*) FROM labels"),
        }

    # -- claims: which viewer is showing which query ---------------------------------------
    #
    # A viewer claims a query before showing it, for ``lease`` seconds, and renews its claims
    # while it runs. Picking and claiming happen in one BEGIN IMMEDIATE transaction, so two
    # viewers never get the same query at once; a crashed viewer's claims simply expire.

    # A query is pending while no label on it stands (a non-retraction nobody retracted).
    _PENDING = """NOT EXISTS (SELECT 1 FROM labels l WHERE l.query_id = q.id
                  AND l.choice != 'retract'
                  AND NOT EXISTS (SELECT 1 FROM labels r WHERE r.retracts = l.id))"""

    @_guarded
    def claim_next_query(self, viewer: str, lease: float,
                         exclude: Sequence[int] = ()) -> Query | None:
        """Claim the oldest pending query that no other viewer holds, for ``lease`` seconds.

        ``exclude``: query ids this viewer already holds and does not want again. Returns
        None when no such query is waiting.
        """
        now = time.time()
        skip = [int(i) for i in exclude]
        not_in = f"AND q.id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        with self.transaction():
            row = self.db.execute(
                "SELECT q.id, q.clip_a, q.clip_b, q.iteration FROM queries q "
                "WHERE (q.claimed_by IS NULL OR q.claimed_by = ? OR q.claimed_until IS NULL "
                "OR q.claimed_until <= ?) "
                f"{not_in} AND {self._PENDING} ORDER BY q.id LIMIT 1",
                (viewer, now, *skip)).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE queries SET claimed_by=?, claimed_until=? WHERE id=?",
                            (viewer, now + lease, row[0]))
        return Query(*row)

    @_guarded
    def renew_claims(self, viewer: str, lease: float) -> None:
        """Extend every claim ``viewer`` holds to ``lease`` seconds from now (a heartbeat)."""
        with self.transaction():
            self.db.execute("UPDATE queries SET claimed_until=? WHERE claimed_by=?",
                            (time.time() + lease, viewer))

    @_guarded
    def release_claims(self, viewer: str, query_ids: Sequence[int] | None = None) -> None:
        """Give back ``viewer``'s claims (all of them, or those on ``query_ids``)."""
        sql = "UPDATE queries SET claimed_by=NULL, claimed_until=NULL WHERE claimed_by=?"
        args: list[object] = [viewer]
        if query_ids is not None:
            ids = [int(i) for i in query_ids]
            if not ids:
                return
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args += ids
        with self.transaction():
            self.db.execute(sql, args)

    @_guarded
    def claim_holders(self) -> dict[str, float]:
        """Viewers holding live claims on pending queries -> their latest claimed_until."""
        rows = self.db.execute(
            "SELECT q.claimed_by, MAX(q.claimed_until) FROM queries q WHERE q.claimed_by "
            f"IS NOT NULL AND q.claimed_until > ? AND {self._PENDING} GROUP BY q.claimed_by",
            (time.time(),))
        return {r[0]: float(r[1]) for r in rows}

    @_guarded
    def add_viewer_label(self, query_id: int, choice: str, teacher: str,
                         shown_swapped: bool | None = None,
                         response_time: float | None = None) -> int | None:
        """A viewer's answer, committed before this returns; None if not stored because the
        query already has a standing label (another viewer answered it first).

        Check and insert happen in one transaction, so a query is answered at most once
        however many viewers show it. The query's claim is released.
        """
        if choice not in CHOICES:
            raise StoreError(f"label choice must be one of {CHOICES}, got {choice!r}")
        with self.transaction():
            row = self.db.execute(f"SELECT {self._PENDING} FROM queries q WHERE q.id=?",
                                  (query_id,)).fetchone()
            if row is None:
                raise StoreError(f"cannot label query {query_id}: no such query in {self.path}")
            if not row[0]:
                return None
            cur = self.db.execute(
                "INSERT INTO labels (query_id, choice, teacher, created, shown_swapped, "
                "response_time) VALUES (?, ?, ?, ?, ?, ?)",
                (query_id, choice, teacher, time.time(),
                 None if shown_swapped is None else int(shown_swapped), response_time))
            # Answered: the claim has done its job (an undo claims the query again).
            self.db.execute("UPDATE queries SET claimed_by=NULL, claimed_until=NULL "
                            "WHERE id=?", (query_id,))
            return cur.lastrowid

    @_guarded
    def undo_label(self, label_id: int, teacher: str, viewer: str, lease: float) -> Query:
        """Retract a label (appending, deleting nothing) and claim its query for ``viewer``,
        in one transaction, so no other viewer can take the query in between."""
        with self.transaction():
            row = self.db.execute(
                "SELECT l.query_id FROM labels l WHERE l.id=? AND l.choice != 'retract' AND "
                "NOT EXISTS (SELECT 1 FROM labels r WHERE r.retracts = l.id)",
                (label_id,)).fetchone()
            if row is None:
                raise StoreError(f"cannot undo label {label_id}: no such standing label")
            self.db.execute(
                "INSERT INTO labels (query_id, choice, teacher, created, retracts) "
                "VALUES (?, 'retract', ?, ?, ?)", (row[0], teacher, time.time(), label_id))
            self.db.execute("UPDATE queries SET claimed_by=?, claimed_until=? WHERE id=?",
                            (viewer, time.time() + lease, row[0]))
        return self.get_query(row[0])
