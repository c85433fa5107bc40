"""Is the reward model's confidence worth anything? The reliability of its predicted
preferences on held-out labels (``rlhf plot RUN --calibration``).

The run's newest checkpoint's reward model predicts P(a > b) for every held-out label (the
split the trainer itself keeps out of training: ``rlhf.reward.data.split_hash`` of the pair
and the run's seed). Binned by that probability, a calibrated model's bins sit on the
diagonal: of the pairs it gives 0.8, four in five were answered 'a'. The labels are read as
given, whatever ``reward.robust`` did with them in training, so the plot judges the model
against what people said.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rlhf.clips import Clip
from rlhf.reward.model import RewardModel
from rlhf.reward.trainer import RewardTrainer
from rlhf.rundir import RunDir, RunDirError
from rlhf.store import Store


@dataclass(frozen=True)
class Reliability:
    """One run's reliability diagram: per probability bin (``bins`` of them), the mean
    predicted P(a > b) ``predicted`` (bins,), the share answered 'a' ``observed`` (bins,)
    (NaN for empty bins) and the label count ``counts`` (bins,)."""

    name: str
    ece: float
    """Expected calibration error: the count-weighted mean |predicted - observed|."""
    predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    checkpoint: str

    @property
    def labels(self) -> int:
        return int(self.counts.sum())


def newest_trainer(run: RunDir) -> tuple[Path, RewardTrainer, dict[int, Clip]]:
    """The newest checkpoint's directory, its reward model in a trainer synced with every
    label of the run's store (float32 on the CPU), and the labelled clips without frames."""
    cfg = run.load_config()
    latest = run.latest_checkpoint()
    if latest is None:
        raise RunDirError(f"{run.path}: no checkpoint yet, so no fitted reward model to "
                          "judge; try again after the run's first iteration")
    # float32 on the CPU whatever the run trained in: a judgement, not a speed record.
    reward_cfg = replace(cfg.reward, device="cpu", threads=0, precision="fp32")
    trainer = RewardTrainer(RewardModel.load(latest), reward_cfg, cfg.loop.clip_length,
                            seed=cfg.seed)
    with Store(run.store_location(cfg), readonly=True) as store:
        pairs, mu = store.preferences()
        ids = sorted({int(i) for i in np.ravel(pairs)})
        clips = {c.id: c.without_frames() for c in store.get_clips(ids)}
    if len(mu) == 0:
        raise RunDirError(f"{run.path}: no labels yet, so nothing to judge the reward model "
                          "by; label some pairs first")
    trainer.sync(pairs, mu, clips)
    return latest, trainer, clips


def held_out_reliability(run_dir: str | Path, bins: int = 10,
                         name: str | None = None) -> Reliability:
    """The reliability of ``run_dir``'s newest reward model on its held-out strict labels
    (ties and skips have no side to be right about)."""
    run = RunDir.open(run_dir)
    cfg = run.load_config()
    latest, trainer, _clips = newest_trainer(run)
    mu = trainer.data.mu.view()
    val = torch.nonzero(trainer.data.is_val.view()).squeeze(1)
    ece, predicted, observed, counts = trainer.calibration(val, bins)
    if not counts.sum():
        raise RunDirError(f"{run.path}: none of its {len(mu)} labels is a held-out strict "
                          f"answer (reward.val_fraction={cfg.reward.val_fraction}); the plot "
                          "needs more labels")
    return Reliability(name or str(run.path), ece, predicted, observed, counts, latest.name)
