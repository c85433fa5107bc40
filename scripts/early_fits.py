"""Was it the reward learner? Refit a finished run's reward model offline at its early label
counts, on the run's own labels in their order (same seed, same labels), under several
reward-learning variants, and rank every stored clip against its true return.

    python scripts/early_fits.py RUN_DIR [--variants plain robust ...] [--counts 175 292 ...]

Variants:

- ``plain``: the run's reward settings with ``reward.robust`` and
  ``reward.annotator_reliability`` off;
- ``weighted``: ``reward.annotator_reliability`` on (a crowd run's annotators);
- ``robust``: ``reward.robust`` on, as the trainer screens today (a label is judged only
  from the fit after it first trained on it);
- ``robust-stale``: ``reward.robust`` screening every label, the newest included, by the
  model of the previous fit (the trainer before 2026-12-03).

Prints one row per (variant, label count): the Spearman correlation of the model's clip
returns with the true ones over every stored clip, and for the robust variants how many
labels the fit left out or flipped and what share of those answered against the true
returns (precision) and of the wrong answers were caught (recall). The run's env must be
installable here (its spaces give the reward model's inputs).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from rlhf.config import load_config
from rlhf.environment import make_env
from rlhf.reward.model import FeatureSpec, RewardModel
from rlhf.reward.trainer import RewardTrainer
from rlhf.store import Store

VARIANTS = ("plain", "weighted", "robust", "robust-stale")
RUN_COUNTS = (175, 292, 350, 389, 418, 441, 460, 477, 492, 505, 517)
"""A HalfCheetah preset run's label counts at iterations 0-10."""


@dataclass
class Row:
    variant: str
    labels: int
    spearman: float
    """Over every stored clip."""
    spearman_next: float
    """Over the clips of the next label count's new queries: the states the policy went to
    after training on this model (where a model being exploited is wrong)."""
    screened: int = 0
    """Labels this fit left out or trained flipped."""
    precision: float = float("nan")
    recall: float = float("nan")
    flip_rates: dict[str, float] | None = None


def early_fits(run_dir: Path, variants: list[str], counts: list[int], seed: int) -> list[Row]:
    cfg = load_config(run_dir / "config.yaml")
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        pairs, mu, who = store.preferences_by()
        clips = {c.id: c.without_frames() for c in store.get_clips(store.clip_ids())}
    env = make_env(cfg.env)
    spec = FeatureSpec.from_spaces(env.observation_space, env.action_space)
    env.close()
    ordered = [clips[i] for i in sorted(clips)]
    true = np.array([c.rewards.sum() for c in ordered])
    clip_true = {c.id: float(c.rewards.sum()) for c in ordered}
    # (N,) True where the answer goes against the true returns; ties and 'equal' are not
    # wrong answers here (the B-Pref teacher's equal threshold is its own rule).
    diff = np.array([clip_true[int(a)] - clip_true[int(b)] for a, b in pairs])
    wrong = ((mu == 1) & (diff < 0)) | ((mu == 0) & (diff > 0))
    rows = []
    for variant in variants:
        cfg.reward.annotator_reliability = variant == "weighted"
        cfg.reward.robust = variant.startswith("robust")
        model = RewardModel(spec, cfg.reward.ensemble, cfg.reward.hidden, seed=seed)
        trainer = RewardTrainer(model, cfg.reward, cfg.loop.clip_length, seed=seed)
        for k, k_next in zip(counts, [*counts[1:], len(mu)], strict=True):
            trainer.sync(pairs[:k], mu[:k], clips)
            rates = trainer.estimate_label_noise(who[:k]) if variant == "weighted" else None
            if variant == "robust-stale":
                trainer.fitted_labels = len(trainer.data)
            trainer.fit()
            pred = trainer.clip_member_returns(ordered).mean(0)
            nxt = [clips[int(i)] for i in np.unique(pairs[k:k_next])]
            pred_next = trainer.clip_member_returns(nxt).mean(0) if nxt else np.zeros(0)
            rho_next = spearmanr(pred_next, [clip_true[c.id] for c in nxt])[0] \
                if len(nxt) > 2 else float("nan")
            row = Row(variant, k, round(float(spearmanr(pred, true)[0]), 3),
                      round(float(rho_next), 3),
                      flip_rates=None if rates is None
                      else {a: round(v, 2) for a, v in rates.items()})
            if cfg.reward.robust:
                screened = trainer.distrusted | trainer.flipped
                caught = int((screened & wrong[:k]).sum())
                row.screened = int(screened.sum())
                row.precision = round(caught / max(row.screened, 1), 2)
                row.recall = round(caught / max(int(wrong[:k].sum()), 1), 2)
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["plain", "robust"])
    p.add_argument("--counts", type=int, nargs="+", default=list(RUN_COUNTS[:7]),
                   help="label counts to refit at (default: a HalfCheetah run's iterations 0-6)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    for row in early_fits(args.run_dir, args.variants, args.counts, args.seed):
        print(row, flush=True)


if __name__ == "__main__":
    main()
