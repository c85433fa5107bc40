"""The learned reward, as seen by an SB3 agent.

``LearnedRewardVecEnv`` replaces the environment's reward with the reward model's
(ensemble mean, normalised) in one batched call per vector step: all envs and all members
in one forward pass, one transfer to the device and one back. The env's own reward stays
in ``info["true_reward"]``; the Monitor below records true episode returns.

With ``deferred=True`` the wrapper gives the agent 0 at each step and keeps the step's
inputs; ``RelabelRollout`` then scores the whole rollout in one call when it ends (one
transfer each way per rollout instead of per step, which pays where the reward model is on
a GPU) and adds the rewards to SB3's rollout buffer before recomputing the advantages.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rlhf.clips import batch_of_one, flatten_obs

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
"""(obs (N, *obs_shape), actions (N, *act_shape), next_obs or None) -> rewards (N,)."""


class LearnedRewardVecEnv(VecEnvWrapper):
    """Reward r(o_t, a_t[, o_{t+1}]) from ``reward_fn`` instead of the env's.

    ``reward_fn`` can be swapped at any time (``set_reward_fn``), e.g. after each reward
    model fit. With ``reward_fn=None`` the env's own reward passes through.

    >>> import gymnasium as gym
    >>> from stable_baselines3.common.vec_env import DummyVecEnv
    >>> venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2)
    >>> env = LearnedRewardVecEnv(venv, lambda obs, act, nxt: obs[:, 0] + act[:, 0])
    >>> obs = env.reset()
    >>> _, rewards, _, infos = env.step(np.ones((2, 1), np.float32))
    >>> bool(np.allclose(rewards, obs[:, 0] + 1)), rewards.shape   # r(o_t, a_t), per env
    (True, (2,))
    >>> "true_reward" in infos[0]                                   # the env's own, kept aside
    True
    """

    def __init__(self, venv: VecEnv, reward_fn: RewardFn | None = None,
                 use_next_obs: bool = False, deferred: bool = False):
        super().__init__(venv)
        self.reward_fn = reward_fn
        self.use_next_obs = use_next_obs
        self.deferred = deferred
        self._space = venv.observation_space
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def set_reward_fn(self, reward_fn: RewardFn | None) -> None:
        self.reward_fn = reward_fn

    def reset(self):
        obs = self.venv.reset()
        self._obs = flatten_obs(self._space, obs)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, true_rewards, dones, infos = self.venv.step_wait()
        flat = flatten_obs(self._space, obs)
        if self.reward_fn is not None:
            next_obs = None
            if self.use_next_obs:
                next_obs = flat.copy()
                for i in np.flatnonzero(dones):  # the auto-reset replaced the last obs
                    term = infos[i]["terminal_observation"]
                    next_obs[i] = flatten_obs(self._space, batch_of_one(term))[0]
            if self.deferred:
                self._pending.append((self._obs, self._actions, next_obs))
                rewards = np.zeros(self.num_envs, np.float32)
            else:
                rewards = np.asarray(self.reward_fn(self._obs, self._actions, next_obs),
                                     dtype=np.float32)
        else:
            rewards = np.asarray(true_rewards, dtype=np.float32)
        for info, r in zip(infos, true_rewards, strict=True):
            info["true_reward"] = float(r)
        self._obs = flat
        return obs, rewards, dones, infos

    def discard_pending(self) -> None:
        self._pending = []

    def pending_rewards(self) -> np.ndarray | None:
        """The learned reward (K, N) of the K deferred vector steps since the last call, in
        one ``reward_fn`` call over all K * N of them; None when there are none."""
        pending, self._pending = self._pending, []
        if not pending or self.reward_fn is None:
            return None
        obs, actions, next_obs = zip(*pending, strict=True)
        rows = np.concatenate(obs)
        nxt = None if next_obs[0] is None else np.concatenate(next_obs)
        rewards = np.asarray(self.reward_fn(rows, np.concatenate(actions), nxt), np.float32)
        return rewards.reshape(len(pending), self.num_envs)


class RelabelRollout(BaseCallback):
    """For an on-policy agent (PPO, A2C) over a deferred ``LearnedRewardVecEnv``: when a
    rollout ends, add the learned reward of all its steps (one call) to the rollout buffer,
    whose rewards then hold only SB3's bootstrap of truncated episodes, and recompute the
    returns and advantages."""

    def __init__(self, learned: LearnedRewardVecEnv):
        super().__init__()
        self.learned = learned

    def _on_rollout_start(self) -> None:
        self.learned.discard_pending()  # a rollout cut short by another callback

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        rewards = self.learned.pending_rewards()
        if rewards is None:
            return
        buffer = self.model.rollout_buffer
        assert isinstance(buffer, RolloutBuffer)
        if rewards.shape != buffer.rewards.shape:
            raise RuntimeError(f"relabelling: {rewards.shape[0]} deferred steps for a rollout "
                               f"of {buffer.rewards.shape[0]} (the reward model was set "
                               "during a rollout)")
        buffer.rewards += rewards
        buffer.compute_returns_and_advantage(last_values=self.locals["values"],
                                             dones=self.locals["dones"])
