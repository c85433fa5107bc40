"""Learning curves: true return against timesteps or labels, for one run or many; and the
reward model's reliability diagram.

``rlhf plot RUN_DIR...`` overlays runs from their ``metrics.csv``; the efficiency suite
(``scripts/efficiency.py``) adds PPO-on-the-true-reward baselines from its own CSVs. Curves
with the same name (seeds of one setting) are drawn as their median with a min–max band.
``rlhf plot RUN_DIR... --calibration`` draws each run's held-out reliability
(``rlhf.calibration``) against the diagonal.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlhf.io import atomic_write_bytes

if TYPE_CHECKING:
    from rlhf.calibration import Reliability

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


def plot_reliability(diagrams: Sequence[Reliability], out: str | Path) -> Path:
    """Each run's predicted P(a > b) against the share of 'a' answers, per bin (a point's
    size: its label count), with the diagonal a calibrated model would follow; the PNG
    ``out`` is written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 5.0), dpi=100)
    try:
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        for d in diagrams:
            keep = d.counts > 0
            (line,) = ax.plot(d.predicted[keep], d.observed[keep], linewidth=1.5,
                              label=f"{d.name} (ECE {d.ece:.3f}, {d.labels} labels)")
            ax.scatter(d.predicted[keep], d.observed[keep], color=line.get_color(),
                       s=12 + 60 * d.counts[keep] / d.counts.max(), zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted P(a better), held-out labels")
        ax.set_ylabel("share answered a")
        ax.set_title("reward model reliability")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
        fig.tight_layout()
        return _save(fig, out)
    finally:
        plt.close(fig)


def _save(fig: Any, out: str | Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out


def plot_curves(curves: Sequence[Curve], out: str | Path, xlabel: str,
                ylabel: str = "true return", title: str = "") -> Path:
    """Draw ``curves`` into the PNG ``out`` (written atomically); returns its path.

    Curves sharing a name are one setting over several seeds: their median is drawn with a
    band from their min to their max, over the x range every one of them covers (a run
    still going shortens it; nothing is extrapolated).
    """
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
        return _save(fig, out)
    finally:
        plt.close(fig)
