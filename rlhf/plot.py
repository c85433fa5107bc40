"""Learning curves: true return against timesteps or labels, for one run or many.

``rlhf plot RUN_DIR...`` overlays runs from their ``metrics.csv``; the efficiency suite
(``scripts/efficiency.py``) adds PPO-on-the-true-reward baselines from its own CSVs. Curves
with the same name (seeds of one setting) are drawn as their median with a min–max band.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhf.io import atomic_write_bytes

X_AXES = ("timesteps", "labels")


@dataclass
class Curve:
    """One learning curve: ``y[i]`` is the true return at ``x[i]``; both shape (n,)."""

    name: str
    x: np.ndarray
    y: np.ndarray


def read_curve_csv(path: str | Path, x: str = "timesteps", y: str = "eval_return",
                   name: str | None = None) -> Curve:
    """The rows of ``path`` (a CSV with columns ``x`` and ``y``) where ``y`` is a number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a run directory has metrics.csv)")
    xs, ys = [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {x, y} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))}")
        for row in reader:
            try:
                xv, yv = float(row[x]), float(row[y])
            except (TypeError, ValueError):
                continue
            if not (math.isnan(xv) or math.isnan(yv)):
                xs.append(xv)
                ys.append(yv)
    return Curve(name or path.parent.name, np.asarray(xs), np.asarray(ys))


def run_curve(run_dir: str | Path, x: str = "timesteps", name: str | None = None) -> Curve:
    """A run's evaluations (true return of its policy) against ``x``; named ``name``, or
    the run directory's path."""
    if x not in X_AXES:
        raise ValueError(f"x: {x!r} is not one of {', '.join(X_AXES)}")
    run_dir = Path(run_dir)
    return read_curve_csv(run_dir / "metrics.csv", x=x, name=name or str(run_dir))


def _common_grid(curves: Sequence[Curve]) -> np.ndarray:
    """The x values of all ``curves`` inside the range every one of them covers."""
    lo = max(float(c.x.min()) for c in curves)
    hi = min(float(c.x.max()) for c in curves)
    xs = np.unique(np.concatenate([c.x for c in curves]))
    return xs[(xs >= lo) & (xs <= hi)]


def plot_curves(curves: Sequence[Curve], out: str | Path, xlabel: str,
                ylabel: str = "true return", title: str = "") -> Path:
    """Draw ``curves`` into the PNG ``out`` (written atomically); returns its path.

    Curves sharing a name are one setting over several seeds: their median is drawn with a
    band from their min to their max, over the x range every one of them covers (a run
    still going shortens it; nothing is extrapolated).
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Curve]] = defaultdict(list)
    for c in curves:
        if len(c.x):
            groups[c.name].append(c)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        for name, members in groups.items():
            grid = _common_grid(members)
            ys = np.stack([np.interp(grid, c.x, c.y) for c in members])
            label = name if len(members) == 1 else f"{name} (median of {len(members)})"
            (line,) = ax.plot(grid, np.median(ys, axis=0), label=label, linewidth=1.8,
                              marker="o", markersize=3)  # a marker: one point is visible
            if len(members) > 1:
                ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.2,
                                color=line.get_color(), linewidth=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        if groups:
            ax.legend(fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out
