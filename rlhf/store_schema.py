"""What the store's SQLite file holds: the schema and its version (SQLite's ``PRAGMA
user_version``), the one definition of the label that stands for a query, the records read
from it (``Query``, ``Label``, ``StoreCounts``) and the encoding of a clip's arrays as one
npz blob. Imports nothing of rlhf; ``rlhf.store`` uses and re-exports it.
"""

from __future__ import annotations

import io
import sqlite3
from dataclasses import asdict, dataclass

import numpy as np

SCHEMA_VERSION = 1

_SCHEMA = f"""
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
CREATE INDEX IF NOT EXISTS labels_retracts ON labels(retracts);
PRAGMA user_version = {SCHEMA_VERSION};
"""

CANDIDATES = """CREATE TABLE IF NOT EXISTS candidates (
    clip_id INTEGER PRIMARY KEY REFERENCES clips(id),
    params TEXT NOT NULL
)"""
"""A tuning run's (``rlhf tune``) clips: the parameters (a JSON object, name -> value) whose
behaviour each clip shows. Made by the first tuning write, so RL stores (and rlhf versions
that predate tuning, sharing a store) are unchanged."""

QUERY_ROWS = "SELECT q.id, q.clip_a, q.clip_b, q.iteration FROM queries q"
"""A ``Query`` record per row (``Query(*row)``), for a WHERE clause to follow."""

# Which label stands for a query, defined here once. A label is live while it is not a
# retraction and no retraction takes it back; the label that stands for a query is its
# latest live one; a query is pending while none stands. Subqueries (SQLite flattens them),
# so that a read-only or immutable store needs nothing created in it.
LIVE_LABELS = ("SELECT * FROM labels l WHERE l.choice != 'retract' "
               "AND NOT EXISTS (SELECT 1 FROM labels r WHERE r.retracts = l.id)")
STANDING_LABELS = (f"SELECT * FROM ({LIVE_LABELS}) s WHERE NOT EXISTS "
                   f"(SELECT 1 FROM ({LIVE_LABELS}) n WHERE n.query_id = s.query_id "
                   "AND n.id > s.id)")
# No label stands for a query exactly when it has no live label (checked without the
# "latest" part: the same answer, faster).
PENDING = f"NOT EXISTS (SELECT 1 FROM ({LIVE_LABELS}) e WHERE e.query_id = q.id)"
"""A condition on ``queries q``: no label stands for it."""


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


@dataclass(frozen=True)
class StoreCounts:
    """``Store.counts()``: what the store holds, from one snapshot of it."""

    clips: int
    queries: int
    labels: int
    """Queries a label stands for (skips included)."""
    skipped: int
    """Of those, the ones whose standing label is a skip."""
    pending: int
    """Queries no label stands for."""
    label_events: int
    """Label rows ever appended: labels, retracted ones and the retractions."""

    def as_dict(self) -> dict[str, int]:
        """The counts by name (``rlhf status --json``, status.json), in this order."""
        return asdict(self)


def create_schema(db: sqlite3.Connection) -> None:
    """The tables of a new store and its version; inside the caller's transaction."""
    for statement in _SCHEMA.split(";"):  # executescript would COMMIT early
        if statement.strip():
            db.execute(statement)


def stored_version(db: sqlite3.Connection) -> tuple[object, bool]:
    """The schema version a store says it has, and whether it says so the old way.

    ``PRAGMA user_version`` where set; else, in a store written before the version moved
    there, its ``meta`` table's ``schema_version`` (an int where it is digits, else as
    stored, for the message), with True. (None, False): no version at all.
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version:
        return int(version), False
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        value = None if row is None else row[0]
        return int(value) if str(value).isdigit() else value, True
    return None, False


def move_version_marker(db: sqlite3.Connection, version: int) -> None:
    """A store from before ``user_version``: its version copied there; inside the caller's
    transaction, and idempotent. The ``meta`` table stays, so an older rlhf sharing the
    store (another labeller's machine) still opens it."""
    db.execute(f"PRAGMA user_version = {int(version)}")


def encode_arrays(**arrays: np.ndarray | None) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: v for k, v in arrays.items() if v is not None})
    return buf.getvalue()


def decode_arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
