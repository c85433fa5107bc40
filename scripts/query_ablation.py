#!/usr/bin/env python
"""Query selection, offline: does active selection teach the reward model more per label?

Pool-based active learning on clips that earlier runs recorded (their ``store.sqlite``):
the clips are split into a selection pool and held-out test clips; each strategy (random,
disagreement, entropy, their k-center diverse batches, and ``policy-aligned``) starts from
the same ``--initial`` random labels and then asks ``--round`` pairs at a time from the
pool, through the loop's own preference-learning
room (``rlhf.preferences.PreferenceLearner``: selection, a fresh store, a perfect simulated
teacher, the reward model with the config's ensemble and settings refitted after every
round). After each round it measures the
reward model on the test clips: pair accuracy (how often the ensemble's mean return orders
two test clips as the true return does) and the Pearson correlation of its per-step reward
with the true reward.

``policy-aligned`` (QPA's) draws uniformly from the pool's newest ``--recent-clips`` clips
only (the pool keeps the order the runs recorded their clips in, so these are the last
store's final policy's), as ``query.recent_clips`` does online. Offline it is judged on test
clips of every policy, the distribution it deliberately gives up; online it serves the
policy that is learning.

This isolates what query selection is for, the reward model's accuracy per label, from
PPO's seed-to-seed spread, which at one seed swamps the differences between strategies in
the full runs. Several seeds are cheap: minutes on a CPU, not hours.

    python scripts/query_ablation.py runs/efficiency/runs/halfcheetah-*/store.sqlite \\
        --seeds 0 1 2 3 4        # settings: the first store's run config (or --config)

Writes ``OUT/query_ablation.json``, ``OUT/query_ablation.md`` (median, min and max over
seeds) and ``OUT/query_ablation.png`` (test pair accuracy against labels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf.clips import Clip  # noqa: E402
from rlhf.config import Config, load_config  # noqa: E402
from rlhf.environment import make_env  # noqa: E402
from rlhf.evaluate import reward_correlation  # noqa: E402
from rlhf.io import atomic_write_text  # noqa: E402
from rlhf.preferences import PreferenceLearner  # noqa: E402
from rlhf.queries import STRATEGIES, make_strategy  # noqa: E402
from rlhf.reward.model import FeatureSpec, RewardModel  # noqa: E402
from rlhf.reward.trainer import RewardTrainer  # noqa: E402
from rlhf.store import Store  # noqa: E402
from rlhf.teachers import SimulatedTeacher  # noqa: E402

POLICY_ALIGNED = "policy-aligned"
"""QPA's candidate pool: random pairs from the newest clips only (not a ``QueryStrategy``:
a window on the pool, as ``query.recent_clips`` is online)."""


def load_clips(stores: list[Path]) -> list[Clip]:
    """Every clip of ``stores``, without frames."""
    clips: list[Clip] = []
    for path in stores:
        if not path.is_file():
            raise SystemExit(f"query_ablation: {path}: no such store")
        with Store(path, readonly=True) as store:
            clips += [c.without_frames() for c in store.get_clips(store.clip_ids())]
    return clips


def test_pairs(returns: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) random pairs of test clips whose true returns differ."""
    a = rng.integers(0, len(returns), 4 * n)
    b = rng.integers(0, len(returns), 4 * n)
    keep = returns[a] != returns[b]
    return np.stack([a[keep], b[keep]], axis=1)[:n]


def run_strategy(cfg: Config, spec: FeatureSpec, strategy: str, seed: int, pool: list[Clip],
                 test: list[Clip], pairs_test: np.ndarray, initial: int, round_size: int,
                 budget: int, workdir: Path, recent_clips: int = 0
                 ) -> list[dict[str, float]]:
    """One strategy and seed, through the loop's own preference-learning room (a fresh store
    in ``workdir``): the measurements after each round, (labels, accuracy, corr).

    ``pool``: clips without ids (the store gives them theirs), oldest first.
    ``recent_clips``: the window of ``policy-aligned``. Every strategy gets the same
    learner stream, so the first round (random: nothing is fitted yet) asks the same pairs.
    """
    model = RewardModel(spec, cfg.reward.ensemble, cfg.reward.hidden, seed=seed,
                        clip_reward=cfg.reward.clip_reward)
    trainer = RewardTrainer(model, cfg.reward, cfg.loop.clip_length, seed=seed)
    # Perfect: the better true return, 'equal' on a tie; it draws nothing.
    teacher = SimulatedTeacher(rng=np.random.default_rng(seed))
    true_test = np.array([teacher.clip_return(c) for c in test])
    pool = list(pool)
    rows = []
    aligned = strategy == POLICY_ALIGNED
    with Store(workdir / f"{strategy}-s{seed}.sqlite", create=True) as store:
        learner = PreferenceLearner(trainer, store, teacher,
                                    make_strategy("random" if aligned else strategy),
                                    np.random.default_rng([seed, 7]), cfg.query.candidates,
                                    recent_clips=recent_clips if aligned else 0)
        asked = 0
        while asked < budget:
            n = min(initial if not asked else round_size, budget - asked)
            for i, clip in learner.ask(pool, n, iteration=len(rows)):
                pool[i] = clip
            asked += n
            learner.fit()
            pred = trainer.clip_member_returns(test).mean(0)
            d_pred = pred[pairs_test[:, 0]] - pred[pairs_test[:, 1]]
            d_true = true_test[pairs_test[:, 0]] - true_test[pairs_test[:, 1]]
            rows.append({"labels": learner.fitted_labels,
                         "accuracy": float(np.mean(d_pred * d_true > 0)),
                         "corr": reward_correlation(trainer.model, test)})
    return rows


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f} – {max(values):.3f})"


def report(results: dict, out: Path) -> str:
    """Tables (median, min and max over seeds per strategy and label count) and curves."""
    from rlhf.plot import Curve, plot_curves

    runs, strategies = results["runs"], results["strategies"]
    labels = sorted({r["labels"] for run in runs for r in run["rows"]})
    lines = [f"# Query selection, offline ({time.strftime('%Y-%m-%d')})", "",
             f"Pool {results['pool_clips']} clips, test {results['test_clips']} clips and "
             f"{results['test_pairs']} test pairs, from {', '.join(results['stores'])}; "
             f"config {results['config']}; seeds {' '.join(map(str, results['seeds']))}; "
             "median (min – max) over seeds."]
    for metric, title in (("accuracy", "test pair accuracy"),
                          ("corr", "per-step reward correlation on the test clips")):
        lines += ["", f"{title}:", "", "| labels | " + " | ".join(strategies) + " |",
                  "|---|" + "---|" * len(strategies)]
        for n in labels:
            cells = [[r[metric] for run in runs if run["strategy"] == s
                      for r in run["rows"] if r["labels"] == n] for s in strategies]
            lines.append(f"| {n} | " + " | ".join(_spread(c) if c else "–" for c in cells)
                         + " |")
        curves = [Curve(run["strategy"], np.array([r["labels"] for r in run["rows"]]),
                        np.array([r[metric] for r in run["rows"]])) for run in runs]
        png = plot_curves(curves, out / f"query_ablation_{metric}.png", "labels",
                          ylabel=metric, title=f"query selection, offline: {title}")
        lines += ["", f"![{title}]({png.name})"]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "query_ablation.md", text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stores", nargs="+", type=Path, help="store.sqlite files of earlier runs")
    p.add_argument("--config", default=None,
                   help="the reward model's settings (default: the first store's run config)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    names = [*STRATEGIES, POLICY_ALIGNED]
    p.add_argument("--strategies", nargs="+", choices=names, default=names)
    p.add_argument("--recent-clips", type=int, default=400,
                   help="policy-aligned: the pool's newest clips it draws from (default 400, "
                        "the efficiency suite's window)")
    p.add_argument("--initial", type=int, default=50, help="random labels to start from")
    p.add_argument("--round", type=int, default=50, help="labels asked per round")
    p.add_argument("--budget", type=int, default=400)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--out", type=Path, default=Path("runs/query-ablation"))
    args = p.parse_args()
    if args.recent_clips < 1:
        p.error(f"--recent-clips: must be >= 1, got {args.recent_clips}")
    if args.config is None:
        args.config = str(args.stores[0].parent / "config.yaml")
    cfg = load_config(args.config)
    env = make_env(cfg.env)
    spec = FeatureSpec.from_spaces(env.observation_space, env.action_space,
                                   cfg.reward.use_action, cfg.reward.use_next_obs)
    env.close()
    clips = load_clips(args.stores)
    lengths = sorted({len(c) for c in clips})
    if lengths != [cfg.loop.clip_length]:
        raise SystemExit(f"query_ablation: the stores hold clips of {lengths} steps, the config "
                         f"({args.config}) says loop.clip_length {cfg.loop.clip_length}")
    split = np.random.default_rng(12345).permutation(len(clips))
    n_test = int(len(clips) * args.test_fraction)
    test = [clips[i] for i in split[:n_test]]
    # The pool in recorded order: policy-aligned's window is its newest clips.
    pool = [dataclasses.replace(clips[i], id=None) for i in np.sort(split[n_test:])]
    pairs_test = test_pairs(np.array([c.rewards.sum() for c in test]), 2000,
                            np.random.default_rng(54321))
    results = {"config": args.config, "stores": [str(s) for s in args.stores],
               "seeds": args.seeds, "strategies": args.strategies, "pool_clips": len(pool),
               "test_clips": len(test), "test_pairs": len(pairs_test), "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for s in args.strategies:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as work:
                rows = run_strategy(cfg, spec, s, seed, pool, test, pairs_test, args.initial,
                                    args.round, args.budget, Path(work),
                                    recent_clips=args.recent_clips)
            results["runs"].append({"strategy": s, "seed": seed, "rows": rows})
            print(f"seed {seed} {s}: " + ", ".join(f"{r['labels']}: {r['accuracy']:.3f}"
                                                   for r in rows)
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
            atomic_write_text(args.out / "query_ablation.json", json.dumps(results, indent=1))
    print(report(results, args.out))


if __name__ == "__main__":
    main()
