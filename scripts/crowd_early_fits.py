"""Was it the weighting? Refit a crowd run's reward model offline at its early label counts,
with and without ``reward.annotator_reliability``, on the run's own labels in their order
(same seed, same labels), and rank every stored clip against its true return.

    python scripts/crowd_early_fits.py RUN_DIR [--counts 175 292 350 ...] [--seed 1]

Prints, per setting, (labels, Spearman over all stored clips, estimated flip rates). The
run's env must be installable here (its spaces give the reward model's inputs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from rlhf.config import load_config
from rlhf.environment import make_env
from rlhf.reward.model import FeatureSpec, RewardModel
from rlhf.reward.trainer import RewardTrainer
from rlhf.store import Store


def early_fits(run_dir: Path, counts: list[int], seed: int) -> dict[str, list[tuple]]:
    cfg = load_config(run_dir / "config.yaml")
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        pairs, mu, who = store.preferences_by()
        clips = {c.id: c.without_frames() for c in store.get_clips(store.clip_ids())}
    env = make_env(cfg.env)
    spec = FeatureSpec.from_spaces(env.observation_space, env.action_space)
    env.close()
    ordered = [clips[i] for i in sorted(clips)]
    true = np.array([c.rewards.sum() for c in ordered])
    out: dict[str, list[tuple]] = {}
    for weighted in (False, True):
        cfg.reward.annotator_reliability = weighted
        model = RewardModel(spec, cfg.reward.ensemble, cfg.reward.hidden, seed=seed)
        trainer = RewardTrainer(model, cfg.reward, cfg.loop.clip_length, seed=seed)
        rows = []
        for k in counts:
            trainer.sync(pairs[:k], mu[:k], clips)
            rates = trainer.estimate_label_noise(who[:k]) if weighted else {}
            trainer.fit()
            pred = trainer.clip_member_returns(ordered).mean(0)
            rows.append((k, round(float(spearmanr(pred, true)[0]), 3),
                         {a: round(v, 2) for a, v in rates.items()}))
        out["weighted" if weighted else "plain"] = rows
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--counts", type=int, nargs="+", default=[175, 292, 350, 389, 418, 441, 460],
                   help="label counts to refit at (default: a HalfCheetah run's iterations 0-6)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    for name, rows in early_fits(args.run_dir, args.counts, args.seed).items():
        print(name, rows)


if __name__ == "__main__":
    main()
