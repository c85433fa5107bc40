"""The run's durable store: clips, queries (pairs of clips) and labels, in one SQLite file.

SQLite in WAL mode lets the trainer and one or more viewers (separate processes) share the
file. Every label is committed in its own transaction the moment it is given. Labels are
append-only: undo appends a retraction that points at the label it takes back.

A label's ``choice`` is about the query's own clip order: ``a`` (clip_a is better), ``b``,
``equal`` or ``skip``. Where the viewer showed the clips (``shown_swapped``) is recorded
beside it.
"""

from __future__ import annotations

import io
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rlhf.clips import Clip

SCHEMA_VERSION = 1
Choice = Literal["a", "b", "equal", "skip"]
CHOICES: tuple[str, ...] = ("a", "b", "equal", "skip")
# Preference target for each trainable choice: the probability that clip_a is better.
MU = {"a": 1.0, "b": 0.0, "equal": 0.5}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clips (
    id INTEGER PRIMARY KEY,
    env_step INTEGER NOT NULL,
    length INTEGER NOT NULL,
    true_return REAL NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    clip_a INTEGER NOT NULL REFERENCES clips(id),
    clip_b INTEGER NOT NULL REFERENCES clips(id),
    iteration INTEGER NOT NULL,
    created REAL NOT NULL,
    claimed_by TEXT,
    claimed_until REAL
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    query_id INTEGER NOT NULL REFERENCES queries(id),
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'equal', 'skip', 'retract')),
    teacher TEXT NOT NULL,
    created REAL NOT NULL,
    shown_swapped INTEGER,
    response_time REAL,
    retracts INTEGER REFERENCES labels(id)
);
CREATE INDEX IF NOT EXISTS labels_query ON labels(query_id);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or used as asked; the message says why and what to do."""


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


def encode_arrays(**arrays: np.ndarray | None) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: v for k, v in arrays.items() if v is not None})
    return buf.getvalue()


def decode_arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class Store:
    """One SQLite database per run. Open one Store per process (and per thread)."""

    def __init__(self, path: str | Path, create: bool = False, timeout: float = 30.0):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no store here (is this a run directory?)")
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._check_or_create(create)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a readable rlhf store ({e}); "
                             "it may be corrupt: restore it from a copy") from None

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
        return _Transaction(self.db)

    # -- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- clips ---------------------------------------------------------------------------

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
                arrays = decode_arrays(blob)
                found[cid] = Clip(env_step=env_step, id=cid, **arrays)
        missing = [i for i in unique if i not in found]
        if missing:
            raise StoreError(f"{self.path}: no clip with id {missing[0]}")
        return [found[i] for i in ids]

    # -- queries -------------------------------------------------------------------------

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

    def get_query(self, query_id: int) -> Query:
        row = self.db.execute("SELECT id, clip_a, clip_b, iteration FROM queries WHERE id=?",
                              (query_id,)).fetchone()
        if row is None:
            raise StoreError(f"no query with id {query_id} in {self.path}")
        return Query(*row)

    _EFFECTIVE = """
        SELECT l.* FROM labels l
        WHERE l.choice != 'retract'
          AND NOT EXISTS (SELECT 1 FROM labels r WHERE r.retracts = l.id)
          AND l.id = (SELECT MAX(l2.id) FROM labels l2
                      WHERE l2.query_id = l.query_id AND l2.choice != 'retract'
                        AND NOT EXISTS (SELECT 1 FROM labels r2 WHERE r2.retracts = l2.id))
    """

    def pending_queries(self, limit: int | None = None) -> list[Query]:
        """Queries without a standing label, oldest first."""
        sql = ("SELECT q.id, q.clip_a, q.clip_b, q.iteration FROM queries q WHERE NOT EXISTS "
               f"(SELECT 1 FROM ({self._EFFECTIVE}) e WHERE e.query_id = q.id) ORDER BY q.id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Query(*row) for row in self.db.execute(sql)]

    # -- labels --------------------------------------------------------------------------

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

    def add_labels(self, answers: list[tuple[int, str]], teacher: str) -> None:
        """Labels from a simulated teacher, each in its own transaction like a person's."""
        for query_id, choice in answers:
            self.add_label(query_id, choice, teacher)

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

    def labels(self) -> list[Label]:
        """The standing label of every labelled query (latest, not retracted), by label id."""
        rows = self.db.execute(
            f"SELECT id, query_id, choice, teacher, created, shown_swapped, response_time "
            f"FROM ({self._EFFECTIVE}) ORDER BY id")
        return [Label(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else bool(r[5]), r[6])
                for r in rows]

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


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
