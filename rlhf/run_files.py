"""A run's derived files, ``status.json`` and ``metrics.csv``: written whole (atomically) by
the trainer at every iteration, read defensively by everyone (``rlhf status``, ``plot``, a
resumed run): a damaged file or field is reported once on stderr and left out, never a
reason to stop."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from rlhf.io import atomic_write_text


def read_status(path: Path) -> dict[str, Any]:
    """status.json (the trainer's last progress report), or {} when there is none yet.

    It is derived data, rewritten whole at every iteration: a damaged file (or a field
    of the wrong type) is reported once on stderr and left out, never a reason to stop
    a run or a reader.
    """
    from rlhf.io import warn_once

    later = "it only reports progress, and the trainer rewrites it at its next iteration"
    try:
        status = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as e:
        warn_once(f"{path}: cannot read it ({e.strerror or e}): ignored; {later}")
        return {}
    except ValueError as e:  # truncated or garbled JSON, or not UTF-8
        problem = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "invalid JSON"
        warn_once(f"{path} is damaged ({problem}): ignored; {later}")
        return {}
    if not isinstance(status, dict):
        warn_once(f"{path} is damaged (a JSON {type(status).__name__}, not an "
                  f"object): ignored; {later}")
        return {}
    numbers = {"timesteps", "total_timesteps", "iteration", "latest_eval_return",
               "total_labels", "reward_model_val_accuracy", "reward_model_train_accuracy",
               "reward_corr", "waiting_for_labels", "clips", "queries", "labels", "skipped",
               "pending", "label_events", "reward_model_distrusted"}
    per_annotator = {"annotator_flip_rates", "reward_model_distrusted_by"}

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def ok(key: str, value: Any) -> bool:  # the type its readers format it as
        if key in numbers:
            return value is None or number(value)
        if key in per_annotator:
            return value is None or (isinstance(value, dict)
                                     and all(number(v) for v in value.values()))
        return isinstance(value, bool) if key == "finished" else True

    for key in [k for k, v in status.items() if not ok(k, v)]:
        warn_once(f"{path}: field {key!r} is damaged ({status[key]!r:.40}): "
                  f"ignored; {later}")
        del status[key]
    return status


def write_status(path: Path, status: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(status, indent=2, default=float))


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv whole (atomically); rows may gain keys over time."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.csv rows, numbers parsed (an empty cell is NaN).

    Derived data too (one row per finished iteration): damaged rows (ragged, binary
    bytes, no iteration number) are left out with one warning on stderr, the rest kept.
    """
    from rlhf.io import warn_once

    # Honest about the cost: a resumed run rewrites the file from what was read here.
    dropped = "keep a copy if you need them: a resumed run rewrites the file without them"

    def garbled(cells: list[str]) -> bool:  # NULs, or bytes that were not UTF-8
        return any("\0" in c or "\ufffd" in c for c in cells)

    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
        table = list(csv.reader(io.StringIO(text, newline="")))
    except FileNotFoundError:
        return []
    except (OSError, csv.Error) as e:
        warn_once(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e}): "
                  f"its rows are ignored; {dropped}")
        return []
    if not table:
        return []
    header, rows, bad = table[0], list[dict[str, Any]](), list[int]()
    if "iteration" not in header or len(set(header)) != len(header) or garbled(header):
        warn_once(f"{path} is damaged (its header row is not metrics columns): "
                  f"its rows are ignored; {dropped}")
        return []
    for number, cells in enumerate(table[1:], start=2):
        if not cells:  # a blank line
            continue
        row = {} if len(cells) != len(header) or garbled(cells) else \
            {k: _number(v) for k, v in zip(header, cells, strict=True)}
        iteration = row.get("iteration")
        if isinstance(iteration, int) and iteration >= 0:
            rows.append(row)
        else:
            bad.append(number)
    if bad:
        warn_once(f"{path}: {len(bad)} damaged row{'s' * (len(bad) > 1)} (row "
                  f"{', '.join(map(str, bad[:3]))}{', ...' * (len(bad) > 3)}: ragged, "
                  f"binary or without an iteration number) left out; {dropped}")
    return rows


def _number(text: str) -> Any:
    if text == "":
        return math.nan
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
