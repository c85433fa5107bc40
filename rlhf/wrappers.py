"""The learned reward, as seen by an SB3 agent.

``LearnedRewardVecEnv`` replaces the environment's reward with the reward model's
(ensemble mean, normalised) in one batched call per vector step: all envs and all members
in one forward pass, one transfer to the device and one back. The env's own reward stays
in ``info["true_reward"]``; the Monitor below records true episode returns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rlhf.clips import batch_of_one, flatten_obs

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
"""(obs (N, *obs_shape), actions (N, *act_shape), next_obs or None) -> rewards (N,)."""


class LearnedRewardVecEnv(VecEnvWrapper):
    """Reward r(o_t, a_t[, o_{t+1}]) from ``reward_fn`` instead of the env's.

    ``reward_fn`` can be swapped at any time (``set_reward_fn``), e.g. after each reward
    model fit. With ``reward_fn=None`` the env's own reward passes through.
    """

    def __init__(self, venv: VecEnv, reward_fn: RewardFn | None = None,
                 use_next_obs: bool = False):
        super().__init__(venv)
        self.reward_fn = reward_fn
        self.use_next_obs = use_next_obs
        self._space = venv.observation_space
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

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
            rewards = np.asarray(self.reward_fn(self._obs, self._actions, next_obs),
                                 dtype=np.float32)
        else:
            rewards = np.asarray(true_rewards, dtype=np.float32)
        for info, r in zip(infos, true_rewards, strict=True):
            info["true_reward"] = float(r)
        self._obs = flat
        return obs, rewards, dones, infos

