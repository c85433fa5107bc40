"""The agent seam: how the loop drives any SB3 agent, on-policy or off-policy.

The loop needs five things of an agent, whatever it is (``Agent``): behave before the
first queries (``explore``), train for some steps (``train``), take a newly fitted reward
model (``on_reward_fit``), save and load itself without pickle (``save`` / ``load``), and
say how many steps make one update unit (``unit``: a rollout for PPO, a vector step for
SAC), so that iterations end on whole units.

- ``OnPolicyAgent`` (PPO, A2C): the learned-reward wrapper gives each step its reward; a
  new reward model is swapped into the wrapper. Early behaviour is the untrained policy.
- ``OffPolicyAgent`` (SAC, TD3), as in PEBBLE (Lee et al. 2021): a new reward model is
  swapped into the wrapper *and* the whole replay buffer is relabelled with it
  (``rlhf.replay.relabel``); early behaviour is ``agent.pretrain_steps`` of unsupervised
  pre-training on a k-nearest-neighbour state-entropy bonus (``EntropyBonus``); the replay
  buffer is checkpointed as arrays (``replay.zip``), never pickled.

``make(cfg, envs, seed)`` picks the implementation from the SB3 class ``agent.algo`` names.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from rlhf.agent import (
    EnvStack,
    load_obs_rms,
    load_policy,
    make_agent,
    rollout,
    save_obs_rms,
    set_learn_horizon,
)
from rlhf.config import Config
from rlhf.entropy import RunningStd, knn_state_entropy
from rlhf.replay import (
    load_replay_buffer,
    relabel,
    save_replay_buffer,
)
from rlhf.reward.model import RewardModel
from rlhf.rundir import OBS_RMS, POLICY, REPLAY


@runtime_checkable
class Agent(Protocol):
    """What the loop needs of an agent. ``sb3``: the SB3 algorithm (predict, logger)."""

    sb3: BaseAlgorithm

    @property
    def unit(self) -> int:
        """Env steps in one update unit; iterations end on whole units."""

    @property
    def warmup(self) -> int:
        """Env steps ``explore`` counts in the agent's timesteps (pre-training), else 0."""

    def explore(self, steps: int, callbacks: list[BaseCallback]) -> None:
        """Behave before the first queries, so their clips show something; ``steps``:
        ``loop.initial_timesteps`` (agents that pre-train use their own count, and give
        ``callbacks`` to that learning)."""

    def train(self, steps: int, callbacks: list[BaseCallback]) -> None:
        """Learn for ``steps`` env steps on the current learned reward."""

    def on_reward_fit(self, model: RewardModel) -> None:
        """A newly fitted reward model: from now on the agent learns from it."""

    def save(self, directory: Path) -> None:
        """Write the agent's files into ``directory`` (parameters and optimiser state)."""

    def load(self, directory: Path, timesteps: int) -> None:
        """Restore what ``save`` wrote, and the agent's timestep count."""


class OnPolicyAgent:
    """PPO, A2C or any on-policy SB3 algorithm over the run's env stack."""

    def __init__(self, sb3: BaseAlgorithm, envs: EnvStack):
        self.sb3, self.envs = sb3, envs

    @property
    def unit(self) -> int:
        return int(getattr(self.sb3, "n_steps", 1)) * self.sb3.get_env().num_envs

    @property
    def warmup(self) -> int:
        return 0

    def explore(self, steps: int, callbacks: list[BaseCallback]) -> None:
        rollout(self.sb3, self.envs.agent_env, steps)

    def train(self, steps: int, callbacks: list[BaseCallback]) -> None:
        set_learn_horizon(self.sb3, steps)
        self.sb3.learn(steps, reset_num_timesteps=False, callback=CallbackList(callbacks))

    def on_reward_fit(self, model: RewardModel) -> None:
        self.envs.learned.set_reward_fn(model.reward_fn())

    def save(self, directory: Path) -> None:
        with open(directory / POLICY, "wb") as f:
            self.sb3.save(f)
        save_obs_rms(self.sb3.get_env(), directory / OBS_RMS)

    def load(self, directory: Path, timesteps: int) -> None:
        load_policy(self.sb3, directory / POLICY)
        self.sb3.num_timesteps = timesteps
        load_obs_rms(self.envs.agent_env, directory / OBS_RMS)


class OffPolicyAgent(OnPolicyAgent):
    """SAC, TD3 or any off-policy SB3 algorithm: PEBBLE's relabelling and pre-training."""

    def __init__(self, sb3: OffPolicyAlgorithm, envs: EnvStack, pretrain_steps: int,
                 rng: np.random.Generator, relabel_buffer: bool = True):
        super().__init__(sb3, envs)
        self.pretrain_steps, self.relabel_buffer = pretrain_steps, relabel_buffer
        self.rng = rng
        self.last_relabel_seconds = 0.0

    @property
    def unit(self) -> int:
        return self.sb3.get_env().num_envs

    @property
    def warmup(self) -> int:
        """Pre-training steps, rounded up to whole vector steps as SB3 takes them."""
        n = self.unit
        return -(-self.pretrain_steps // n) * n

    def explore(self, steps: int, callbacks: list[BaseCallback]) -> None:
        if not self.pretrain_steps:
            return super().explore(steps, callbacks)
        # The bonus stays the agent's reward until the first fit replaces it (and relabels
        # the buffer): no reward at all would let the env's own reward through the wrapper.
        self.envs.learned.set_reward_fn(EntropyBonus(self.sb3, self.rng))
        self.train(self.pretrain_steps, callbacks)

    def on_reward_fit(self, model: RewardModel) -> None:
        super().on_reward_fit(model)
        if self.relabel_buffer:
            self.last_relabel_seconds = relabel(self.sb3.replay_buffer, model).seconds

    def save(self, directory: Path) -> None:
        super().save(directory)
        save_replay_buffer(self.sb3.replay_buffer, directory / REPLAY)

    def load(self, directory: Path, timesteps: int) -> None:
        super().load(directory, timesteps)
        load_replay_buffer(self.sb3.replay_buffer, directory / REPLAY)


class EntropyBonus:
    """PEBBLE's intrinsic reward for pre-training, as a ``RewardFn`` for the wrapper: the
    distance from each new state to its k-th nearest neighbour among (a sample of) the
    states in the replay buffer, divided by a running standard deviation.

    The reference sample (at most ``reference`` states) is redrawn every ``refresh`` calls:
    a fresh sample per vector step would cost more than the step.
    """

    def __init__(self, sb3: OffPolicyAlgorithm, rng: np.random.Generator, k: int = 5,
                 reference: int = 10_000, refresh: int = 100):
        self.sb3, self.rng, self.k = sb3, rng, k
        self.size, self.refresh = reference, refresh
        self.std = RunningStd()
        self._calls, self._ref = 0, np.zeros((0, 1), np.float32)

    def __call__(self, obs: np.ndarray, actions: np.ndarray,
                 next_obs: np.ndarray | None) -> np.ndarray:
        """(N, obs_dim) flat states -> (N,) bonus; 0 until the buffer holds k+1 states."""
        if self._calls % self.refresh == 0:
            self._ref = self._sample(obs.shape[1])
        self._calls += 1
        if len(self._ref) <= self.k:
            return np.zeros(len(obs), np.float32)
        dist = knn_state_entropy(obs.reshape(len(obs), -1), self._ref, k=self.k, c=None)
        self.std.update(dist)
        return self.std.normalise(dist).astype(np.float32)

    def _sample(self, width: int) -> np.ndarray:
        buf = self.sb3.replay_buffer
        filled = buf.buffer_size if buf.full else buf.pos
        if filled == 0 or not isinstance(buf.observations, np.ndarray):
            return np.zeros((0, width), np.float32)
        rows = buf.observations[:filled].reshape(filled * buf.n_envs, -1)
        pick = self.rng.choice(len(rows), size=min(self.size, len(rows)), replace=False)
        return rows[np.sort(pick)].astype(np.float32)


def make(cfg: Config, envs: EnvStack, seed: int) -> Agent:
    """The agent ``cfg.agent`` names, on the run's env stack, behind the seam."""
    sb3 = make_agent(cfg.agent, envs.agent_env, seed,
                     total_timesteps=cfg.loop.total_timesteps)
    if isinstance(sb3, OffPolicyAlgorithm):
        return OffPolicyAgent(sb3, envs, cfg.agent.pretrain_steps,
                              np.random.default_rng([seed, PRETRAIN_RNG_STREAM]),
                              cfg.agent.relabel_buffer)
    return OnPolicyAgent(sb3, envs)


PRETRAIN_RNG_STREAM = 3
"""``default_rng([seed, 3])`` draws the pre-training bonus's reference states."""


class Throttle:
    """True at most once per ``seconds``: an off-policy agent ends a 'rollout' at every
    step, and the asynchronous refit check reads the store."""

    def __init__(self, seconds: float):
        self.seconds, self._last = seconds, -float("inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
