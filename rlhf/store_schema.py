"""What the store's SQLite file holds: the schema (and its version) and the encoding of a
clip's arrays as one npz blob. Imports nothing of rlhf; ``rlhf.store`` uses and re-exports it.
"""

from __future__ import annotations

import io

import numpy as np

SCHEMA_VERSION = 1

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
CREATE INDEX IF NOT EXISTS labels_retracts ON labels(retracts);
"""


def encode_arrays(**arrays: np.ndarray | None) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: v for k, v in arrays.items() if v is not None})
    return buf.getvalue()


def decode_arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
