"""Labels out of a store and into another (``rlhf export`` / ``rlhf import``): JSON Lines,
one record per line, or a Parquet table (one row per label, the same fields), so other tools
read them without rlhf.

A ``label`` record is one standing answer: its pair (the clips' ids in the source store and
their content keys), the choice in the pair's order, annotator, teacher, time, response time
and the clips' true returns. With ``clips=True`` a ``clip`` record (the clip's arrays as a
base64 npz) precedes the labels that use it, so the file alone can seed another store.

A clip's key is a hash of its arrays, the same in every store holding that clip: an import
finds the pair's clips in the target by key (or adds them from the file's clip records), asks
the pair there as a new query and appends the answer, keeping its annotator and time. An
answer the target already has (same pair, annotator, choice and time) is not added twice, so
importing a file twice changes nothing. Nothing in the target is ever changed or deleted.

Parquet (``.parquet``, with the optional ``pyarrow``: ``pip install 'rlhf[parquet]'``) holds
the label records only: its clips stay in the stores that have them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.clips import Clip
from rlhf.io import atomic_write_bytes, atomic_write_text
from rlhf.store import Store, StoreError
from rlhf.store_schema import decode_arrays, encode_arrays

FORMAT = "rlhf-labels/1"


def clip_key(clip: Clip) -> str:
    """A content hash of a clip's observations, actions and rewards (dtype, shape, bytes)."""
    h = hashlib.sha256()
    for a in (clip.obs, clip.actions, clip.rewards):
        arr = np.ascontiguousarray(a)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def _clip_keys(store: Store, ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for start in range(0, len(ids), 500):  # a chunk at a time: clips can be large
        chunk = ids[start:start + 500]
        out.update((c.id, clip_key(c)) for c in store.get_clips(chunk) if c.id is not None)
    return out


def _records(store: Store, clips: bool) -> Iterator[dict[str, Any]]:
    answers = store.answered()
    ids = sorted({i for a in answers for i in (a.clip_a, a.clip_b)})
    keys = _clip_keys(store, ids)
    yield {"type": "header", "format": FORMAT, "labels": len(answers)}
    written: set[int] = set()
    for a in answers:
        if clips:
            for cid in (a.clip_a, a.clip_b):
                if cid not in written:
                    (clip,) = store.get_clips([cid])
                    blob = encode_arrays(obs=clip.obs, actions=clip.actions,
                                         rewards=clip.rewards, dones=clip.dones,
                                         last_obs=clip.last_obs, states=clip.states,
                                         frames=clip.frames)
                    written.add(cid)
                    yield {"type": "clip", "key": keys[cid], "env_step": clip.env_step,
                           "npz": base64.b64encode(blob).decode()}
        yield {"type": "label", "label_id": a.label_id, "query_id": a.query_id,
               "clip_a": a.clip_a, "clip_b": a.clip_b, "clip_a_key": keys[a.clip_a],
               "clip_b_key": keys[a.clip_b], "choice": a.choice, "annotator": a.annotator,
               "teacher": a.teacher, "created": a.created, "response_time": a.response_time,
               "shown_swapped": a.shown_swapped, "true_a": a.true_a, "true_b": a.true_b}


def export_labels(store: Store, out: Path, clips: bool = False) -> int:
    """Write the store's standing answers to ``out`` (``.jsonl`` or ``.parquet``),
    atomically; returns the number of labels written."""
    if out.suffix.lower() == ".parquet":
        if clips:
            raise StoreError(f"{out}: --clips needs a .jsonl file (a Parquet export is one "
                             "table of labels; the clips stay in the store)")
        rows = [r for r in _records(store, False) if r["type"] == "label"]
        atomic_write_bytes(out, _parquet_bytes(rows))
        return len(rows)
    records = list(_records(store, clips))
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    return sum(r["type"] == "label" for r in records)


# A label record's fields and their Parquet types, in the record's order.
_PARQUET_COLUMNS = (("label_id", "int64"), ("query_id", "int64"), ("clip_a", "int64"),
                    ("clip_b", "int64"), ("clip_a_key", "string"), ("clip_b_key", "string"),
                    ("choice", "string"), ("annotator", "string"), ("teacher", "string"),
                    ("created", "float64"), ("response_time", "float64"),
                    ("shown_swapped", "bool_"), ("true_a", "float64"), ("true_b", "float64"))


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # the submodule the callers use, loaded here
    except ImportError:
        raise StoreError("a .parquet file needs pyarrow: pip install 'rlhf[parquet]' "
                         "(or use a .jsonl file)") from None
    return pyarrow


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    pa = _pyarrow()
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in _PARQUET_COLUMNS],
                       metadata={"format": FORMAT})
    table = pa.Table.from_pylist([{k: r[k] for k, _ in _PARQUET_COLUMNS} for r in rows],
                                 schema=schema)
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _read_parquet(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """An export's records as ``_read`` gives them: the header, then a label per row."""
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path)
        rows = table.to_pylist()  # values past Python's range (a date) fail here
    except (OSError, ValueError, OverflowError, pa.ArrowException) as e:
        raise StoreError(f"{path}: cannot read it as Parquet ({' '.join(str(e).split())})"
                         ) from None
    meta = table.schema.metadata or {}
    header = {"type": "header", "format": meta.get(b"format", b"").decode(errors="replace")}
    return [(0, header)] + [(n, {**row, "type": "label"}) for n, row in enumerate(rows, 1)]


def _read(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: cannot read it ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise StoreError(f"{path}:{n}: not a JSON line; is this a file from rlhf export?"
                             ) from None
        if not isinstance(record, dict):
            raise StoreError(f"{path}:{n}: not a record; is this a file from rlhf export?")
        yield n, record


_LABEL_FIELDS = {"clip_a_key": str, "clip_b_key": str, "choice": str, "created": (int, float)}
_OPTIONAL_FIELDS = {"annotator": str, "teacher": str, "response_time": (int, float),
                    "shown_swapped": bool}
"""A label record's fields that may be missing or null, and their types otherwise."""


def _check_label(r: dict[str, Any], where: str) -> None:
    """One line naming the field of a label record that is missing, mistyped or not finite."""
    for name, kind in _LABEL_FIELDS.items():
        if not isinstance(r.get(name), kind) or isinstance(r.get(name), bool):
            raise StoreError(f"{where}: a label record without a valid {name!r}")
    for name, kind in _OPTIONAL_FIELDS.items():
        value = r.get(name)
        if value is not None and (not isinstance(value, kind) or (
                kind is not bool and isinstance(value, bool))):
            raise StoreError(f"{where}: a label record's {name!r} must be a "
                             f"{_kind_name(kind)} or null, got {type(value).__name__}")
    for name in ("created", "response_time"):
        if r.get(name) is not None and not math.isfinite(r[name]):
            raise StoreError(f"{where}: a label record whose {name!r} is not finite")
    if r["choice"] not in ("a", "b", "equal", "skip"):
        raise StoreError(f"{where}: choice must be a, b, equal or skip (got {r['choice']!r})")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "number" if isinstance(kind, tuple) else {"str": "string"}.get(kind.__name__,
                                                                          kind.__name__)


def import_labels(store: Store, path: Path) -> tuple[int, int]:
    """Append the answers in ``path`` to ``store``; returns (added, already there).

    The whole file is checked before anything is written; the answers are then added in one
    transaction, so a failure leaves the store as it was.
    """
    records = _read_parquet(path) if path.suffix.lower() == ".parquet" else list(_read(path))
    if not records or records[0][1].get("format") != FORMAT:
        raise StoreError(f"{path}: not an rlhf label export (its first line must be the "
                         f"{FORMAT!r} header)")
    new_clips: dict[str, Clip] = {}
    labels: list[dict[str, Any]] = []
    for n, r in records[1:]:
        if r.get("type") == "clip":
            try:
                clip = Clip(env_step=int(r["env_step"]),
                            **decode_arrays(base64.b64decode(r["npz"], validate=True)))
            except Exception as e:  # any damage to the blob: one line, nothing written
                raise StoreError(f"{path}:{n}: a damaged clip record ({e})") from None
            if clip_key(clip) != r.get("key"):
                raise StoreError(f"{path}:{n}: the clip's arrays do not match its key (the "
                                 "file was changed)")
            new_clips[r["key"]] = clip
        elif r.get("type") == "label":
            _check_label(r, f"{path}:{n}")
            labels.append(r)
        else:
            raise StoreError(f"{path}:{n}: unknown record type {r.get('type')!r}")
    have = {key: cid for cid, key in _clip_keys(store, store.clip_ids()).items()}
    missing = sorted({k for r in labels for k in (r["clip_a_key"], r["clip_b_key"])
                      if k not in have and k not in new_clips})
    if missing:
        raise StoreError(f"{path}: {len(missing)} clips its labels use are neither in the "
                         "target store nor in the file; export with --clips (to a .jsonl file)")
    keys_of = {cid: key for key, cid in have.items()}
    present = {(frozenset((keys_of[a.clip_a], keys_of[a.clip_b])), a.annotator, a.created)
               for a in store.answered()}
    added = skipped = 0
    with store.transaction():
        to_add = [k for k in new_clips if k not in have]
        for key, clip in zip(to_add, store._insert_clips([new_clips[k] for k in to_add]),
                             strict=True):
            have[key] = int(clip.id)  # type: ignore[arg-type]
        for r in labels:
            mark = (frozenset((r["clip_a_key"], r["clip_b_key"])), r.get("annotator"),
                    r["created"])
            if mark in present:
                skipped += 1
                continue
            (qid,) = store.db.execute(
                "INSERT INTO queries (clip_a, clip_b, iteration, created) VALUES (?,?,?,?) "
                "RETURNING id", (have[r["clip_a_key"]], have[r["clip_b_key"]], -1,
                                 float(r["created"]))).fetchone()
            swapped = r.get("shown_swapped")
            store._insert(qid, r["choice"], str(r.get("teacher") or "import"),
                          None if swapped is None else int(bool(swapped)),
                          r.get("response_time"), annotator=r.get("annotator"),
                          created=float(r["created"]))
            present.add(mark)
            added += 1
    return added, skipped
