"""Scoring functions for simulated teachers on built-in tasks whose own reward cannot rank
clips (``teacher.score: rlhf.scores:NAME``; each maps a clip to per-step scores (T,)), and
the wrapper that turns any scoring function into an env reward for baselines."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from rlhf.clips import Clip, batch_of_one, flatten_obs
from rlhf.config import Config
from rlhf.environment import StateAdapter, make_env, state_adapter
from rlhf.teachers import ScoreFn


def cartpole_upright(clip: Clip) -> np.ndarray:
    """CartPole-v1: 1 when the pole is vertical and the cart centred, falling to 0 at the
    termination limits (12 degrees, 2.4 units); -1 on the step that ends the episode early."""
    x, theta = clip.obs[:, 0].astype(np.float64), clip.obs[:, 2].astype(np.float64)
    score = 1.0 - 0.7 * np.abs(theta) / 0.2095 - 0.3 * np.abs(x) / 2.4
    return np.where(clip.dones & (clip.rewards > 0) & _terminated(clip), -1.0, score)


def _terminated(clip: Clip) -> np.ndarray:
    # A done step whose next observation is outside the limits is a termination, not a
    # time-limit truncation.
    nxt = clip.next_obs
    return (np.abs(nxt[:, 0]) > 2.4) | (np.abs(nxt[:, 2]) > 0.2095)


# -- the scripted score as an env reward (baselines trained and judged on it) ---------------


class ScoreReward(gym.Wrapper):
    """Reward := the scripted score of each step, for a baseline trained directly on it and
    for judging any policy by it. A score function takes clips: each step is scored as the
    1-step clip the collector would record (observation before the step, flattened like the
    collector's; action; the env's reward; done; the next observation; the state before the
    step). The env's own reward stays in ``info["env_reward"]``."""

    def __init__(self, env: gym.Env, score: ScoreFn):
        super().__init__(env)
        self.score = score
        self.adapter: StateAdapter | None = None
        self._obs: np.ndarray | None = None  # (D,) the observation the next action acts on

    def _flat(self, obs: Any) -> np.ndarray:
        return flatten_obs(self.observation_space, batch_of_one(obs))[0]

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.adapter = state_adapter(self.env)
        self._obs = self._flat(obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded("ScoreReward: call reset() before step()")
        state = self.adapter.get(self.env) if self.adapter is not None else None
        obs, reward, terminated, truncated, info = self.env.step(action)
        last = self._flat(obs)
        clip = Clip(obs=self._obs[None], actions=np.asarray(action)[None],
                    rewards=np.array([reward], np.float64),
                    dones=np.array([terminated or truncated]), last_obs=last,
                    states=None if state is None else np.asarray(state)[None])
        self._obs = last
        info["env_reward"] = reward
        score = float(np.asarray(self.score(clip), dtype=np.float64)[0])
        return obs, score, terminated, truncated, info


def score_vec_env(cfg: Config, score: ScoreFn, n_envs: int, seed: int,
                  train_env: VecEnv | None = None, evaluation: bool = False) -> VecEnv:
    """A VecEnv of ``n_envs`` whose reward is the scripted score, normalising observations
    as the agent's config says: for training (``evaluation=False``), or frozen with the
    statistics of ``train_env`` (for evaluation)."""
    venv: VecEnv = DummyVecEnv([lambda: Monitor(ScoreReward(make_env(cfg.env), score))
                                for _ in range(n_envs)])
    venv.seed(seed)
    if cfg.agent.normalize_obs:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, training=not evaluation)
        if isinstance(train_env, VecNormalize):
            venv.obs_rms = train_env.obs_rms.copy()
    return venv
