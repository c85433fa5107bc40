"""The one writer of a run's progress: ``metrics.csv`` rows, ``status.json`` and the
TensorBoard scalars, from typed records (``IterationRecord``, ``RunStatus``).

``rlhf status``, ``rlhf plot``, the efficiency suite and a resumed run read what this
writes; the column and key names are the files' format.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from rlhf.annotators import UNKNOWN
from rlhf.reward.trainer import FitStats
from rlhf.rundir import RunDir
from rlhf.store import StoreCounts


@dataclass(frozen=True)
class IterationRecord:
    """What one iteration did and where the run stands after it: a row of metrics.csv."""

    iteration: int
    timesteps: int
    labels: int
    queries: int
    clips: int
    eval_return: float
    """True return of the policy; NaN where the iteration did not evaluate."""
    train_return: float
    """Mean true return of the agent's recent training episodes (SB3's episode buffer)."""
    reward_corr: float
    """Correlation of the learned reward with the true one on recent clips."""
    seconds: float
    fit: FitStats | None = None
    """The reward-model fit of this iteration, if it refitted."""
    relabel_seconds: float | None = None
    """An off-policy agent's replay-buffer relabelling after that fit."""
    policy_disagreement: float = math.nan
    """Members' disagreement on the reward of recent clips (``policy_disagreement``)."""
    flip_rates: dict[str | None, float] | None = None
    """Each annotator's estimated flip rate at this fit (``reward.annotator_reliability``)."""
    distrusted_by: dict[str | None, int] | None = None
    """Labels this fit left out or flipped, per annotator (``reward.robust``)."""

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "iteration": self.iteration, "timesteps": self.timesteps, "labels": self.labels,
            "queries": self.queries, "clips": self.clips, "eval_return": self.eval_return,
            "train_return": self.train_return, "reward_corr": self.reward_corr,
            "seconds": round(self.seconds, 3), "rm_policy_disagreement": self.policy_disagreement}
        if self.fit is not None:
            f = self.fit
            row.update(rm_train_loss=f.train_loss, rm_val_loss=f.val_loss,
                       rm_val_accuracy=f.val_accuracy, rm_train_accuracy=f.train_accuracy,
                       rm_weight_decay=f.weight_decay, rm_fit_seconds=f.seconds,
                       rm_steps=f.steps, rm_distrusted=f.distrusted,
                       rm_flipped=f.flipped, rm_val_ece=f.val_ece)
            if self.relabel_seconds is not None:
                row["relabel_seconds"] = round(self.relabel_seconds, 3)
            # Per person where there are several: who the model distrusts, iteration by
            # iteration (status.json has only the latest).
            for key, values in (("rm_distrusted", self.distrusted_by),
                                ("rm_flip_rate", self.flip_rates)):
                if values and len(values) > 1:
                    row.update({f"{key}[{name}]": round(v, 4)
                                for name, v in _by_name(values).items()})
        return row


@dataclass(frozen=True)
class RunStatus:
    """``status.json``: the trainer's last word on the run (the store has the live counts)."""

    counts: StoreCounts
    """The store's counts as the trainer last saw them (flat in status.json)."""
    iteration: int
    timesteps: int
    latest_eval_return: float | None
    reward_model_val_accuracy: float | None
    reward_model_train_accuracy: float | None
    reward_corr: float
    total_timesteps: int
    total_labels: int
    reward_model_distrusted: int | None = None
    """Labels the last fit left out or flipped (``reward.robust``; None: not screened)."""
    reward_model_distrusted_by: dict[str, int] | None = None
    """``reward_model_distrusted`` per annotator, where several answered (else None)."""
    annotator_flip_rates: dict[str, float] | None = None
    """Each annotator's estimated flip rate at the last fit (``reward.annotator_reliability``;
    None: not estimated)."""
    finished: bool = False
    waiting_for_labels: int | None = None
    """Labels a synchronous or first fit waits for (a person is needed), else absent."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out = {**out.pop("counts"), **out}
        if self.waiting_for_labels is None:
            del out["waiting_for_labels"]
        return out


class Progress:
    """Writes a run's metrics.csv, status.json and TensorBoard scalars (``logger``: the
    SB3 logger the agent writes its own curves to)."""

    def __init__(self, run: RunDir, total_timesteps: int, total_labels: int, logger: Any,
                 robust: bool = False):
        self.run, self.logger, self.robust = run, logger, robust
        self.totals = {"total_timesteps": total_timesteps, "total_labels": total_labels}
        self.rows: list[dict[str, Any]] = []

    def restore(self, upto: int | None) -> None:
        """A resumed run: the rows written so far, without those newer than iteration
        ``upto`` (the checkpoint it continues from; None: no checkpoint, keep them)."""
        self.rows = [m for m in self.run.read_metrics()
                     if upto is None or int(m["iteration"]) <= upto]

    def record(self, rec: IterationRecord, counts: StoreCounts) -> dict[str, Any]:
        row = rec.row()
        self.rows.append(row)
        self.run.write_metrics(self.rows)
        last_eval = next((m["eval_return"] for m in reversed(self.rows)
                          if not math.isnan(m["eval_return"])), None)
        fit, flip_rates, distrusted_by = rec.fit, rec.flip_rates, rec.distrusted_by
        self.run.write_status(RunStatus(
            counts, iteration=rec.iteration, timesteps=rec.timesteps,
            latest_eval_return=last_eval,
            reward_model_val_accuracy=None if fit is None else fit.val_accuracy,
            reward_model_train_accuracy=None if fit is None else fit.train_accuracy,
            reward_corr=rec.reward_corr,
            reward_model_distrusted=None if fit is None or not self.robust
            else fit.distrusted + fit.flipped,
            reward_model_distrusted_by=_by_name(distrusted_by)
            if self.robust and fit is not None and distrusted_by and len(distrusted_by) > 1
            else None,
            annotator_flip_rates={k: round(v, 4) for k, v in _by_name(flip_rates).items()}
            if flip_rates else None,
            **self.totals).as_dict())
        for key, value in row.items():
            if isinstance(value, (int, float)) and not math.isnan(value):
                self.logger.record(f"rlhf/{key}", value)
        self.logger.dump(step=rec.timesteps)
        return row

    def waiting(self, labels: int, timesteps: int) -> None:
        """status.json says the run waits for ``labels`` labels (0: no longer waiting)."""
        self.run.write_status({**self.run.read_status(), "timesteps": timesteps,
                               **self.totals, "waiting_for_labels": labels})

    def finished(self) -> None:
        self.run.write_status({**self.run.read_status(), "finished": True})


def _by_name(values: dict[str | None, Any] | None) -> dict[str, Any]:
    """Per-annotator values keyed by name (labels without one under ``UNKNOWN``)."""
    return {UNKNOWN if k is None else str(k): v for k, v in (values or {}).items()}
