"""What a tuning run reports: ``best.json`` (the recommended parameters and the model's
estimate of their utility), ``status.json`` (``TuneStatus``) and ``utility.png`` (the
posterior mean and a 2-sigma band along each parameter, the others held at the best).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rlhf.io import atomic_path, atomic_write_text
from rlhf.rundir import RunDir, RunDirError

BEST, PLOT = "best.json", "utility.png"


@dataclass(frozen=True)
class Best:
    """The recommendation: the seen candidate of highest posterior mean."""

    params: dict[str, float | int]
    utility_mean: float
    """Posterior mean of the latent utility there (the GP's own scale: differences between
    candidates mean something, the level does not)."""
    utility_std: float
    comparisons: int
    """Comparisons the GP was trained on (ties and skips not counted)."""
    ties: int
    skips: int


@dataclass(frozen=True)
class TuneStatus:
    """A tuning run's status.json."""

    comparisons: int
    """Answered queries (skips included)."""
    total_comparisons: int
    pending: int
    ties: int
    skipped: int
    best: dict[str, float | int] | None
    utility_mean: float | None
    utility_std: float | None
    latency_median: float | None
    """Seconds from an answer to the next pair in the store, this session."""
    latency_p95: float | None
    finished: bool
    kind: str = "tune"


def write_best(run: RunDir, best: Best) -> None:
    atomic_write_text(run.path / BEST, json.dumps(asdict(best), indent=2) + "\n")


def read_best(run: RunDir) -> Best:
    """best.json; a RunDirError naming the file when it is missing or damaged."""
    path = run.path / BEST
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        best = Best(**data)
        if not isinstance(best.params, dict):
            raise TypeError("params is not a mapping")
    except FileNotFoundError:
        raise RunDirError(f"{path}: no recommendation yet (it is written after the first "
                          "answer)") from None
    except (OSError, ValueError, TypeError) as e:
        raise RunDirError(f"{path} is damaged ({' '.join(str(e).split())[:80]}); resume the "
                          f"run (rlhf tune --resume {run.path}) to write it again") from None
    return best


def write_plot(run: RunDir, gp: Any, space: Any, best: Best, points: int = 101) -> None:
    """utility.png: for each parameter, the posterior mean (and 2 std) as it varies over
    its range with the others at the best; the seen candidates' values as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = space.to_unit(np.array([[best.params[n] for n in space.names]]))[0]
    cols = min(space.dim, 3)
    rows = -(-space.dim // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    grid = np.linspace(0, 1, points)
    seen = gp.data.points if gp.data is not None else np.zeros((0, space.dim))
    for j, ax in enumerate(axes.flat):
        if j >= space.dim:
            ax.axis("off")
            continue
        u = np.repeat(centre[None], points, axis=0)
        u[:, j] = grid
        mean, std = gp.utility(u)
        x = space.from_unit(u)[:, j]
        ax.plot(x, mean, color="C0")
        ax.fill_between(x, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.2)
        ax.axvline(best.params[space.names[j]], color="C3", lw=1)
        ax.plot(space.from_unit(seen)[:, j] if len(seen) else [], np.full(len(seen),
                ax.get_ylim()[0]), "|", color="k", alpha=0.5)
        if space.params[j].log:
            ax.set_xscale("log")
        ax.set_xlabel(space.names[j])
        ax.set_ylabel("estimated utility")
    fig.suptitle(f"{best.comparisons} comparisons; best (red) = "
                 + ", ".join(f"{k}={v:.3g}" for k, v in best.params.items()), fontsize=9)
    fig.tight_layout()
    with atomic_path(run.path / PLOT) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def format_params(params: dict) -> str:
    """``name=value, ...`` of a parameter dict, floats to 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def status_line(status: dict) -> str:
    """``rlhf status`` of a tuning run in one line, from ``run_status``'s dict."""
    best = status.get("best")
    shown = "-" if not best else format_params(best)
    mean, std = status.get("utility_mean"), status.get("utility_std")
    lat = status.get("latency_median")
    return (f"{status['run_dir']}: {status['labels']}/{status.get('total_comparisons', '?')} "
            f"comparisons ({status['pending']} pending, {status.get('ties', 0)} ties, "
            f"{status['skipped']} skipped); best {shown}; estimated utility "
            + ("-" if mean is None else f"{mean:.2f} ± {std:.2f}")
            + ("" if lat is None else f"; next pair {lat:.2f} s after an answer (median)")
            + (", finished" if status.get("finished") else ""))
