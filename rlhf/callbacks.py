"""The SB3 callbacks the loop hands its agent while it trains."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from rlhf.agents import Throttle


class ProgressBar(BaseCallback):
    """Advances the run's progress bar as the agent steps."""

    def __init__(self, bar: tqdm):
        super().__init__()
        self.bar = bar

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True


class RefitWhenLabelled(BaseCallback):
    """Asynchronous human teacher: after each rollout, ``refit()`` (which refits the reward
    model if enough new labels have landed), so the agent never waits for a person."""

    def __init__(self, refit: Callable[[], object], off_policy: bool):
        super().__init__()
        self.refit = refit
        # An off-policy agent ends a "rollout" at every vector step: look at most twice a
        # second. An on-policy agent looks after every rollout.
        self.due = Throttle(0.5 if off_policy else 0.0)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.due():
            self.refit()


def mean_episode_return(agent: BaseAlgorithm) -> float:
    """Mean return of the agent's recent training episodes (SB3's ``ep_info_buffer``: the
    true reward, the Monitor being innermost); NaN before the first episode ends."""
    buf = getattr(agent, "ep_info_buffer", None)
    if not buf:
        return math.nan
    return float(np.mean([e["r"] for e in buf]))
