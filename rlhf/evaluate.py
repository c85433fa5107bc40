"""Evaluation on the true reward, and diagnostics of the learned reward."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from rlhf.clips import Clip
from rlhf.reward.model import RewardModel


def true_returns(agent: BaseAlgorithm, env: VecEnv, episodes: int,
                 deterministic: bool = True) -> np.ndarray:
    """(episodes,) true returns of the agent's policy (the Monitor below sees the env's
    own reward)."""
    returns, _ = evaluate_policy(agent, env, n_eval_episodes=episodes,
                                 deterministic=deterministic, return_episode_rewards=True,
                                 warn=False)
    return np.asarray(returns, dtype=np.float64)


@torch.no_grad()
def policy_disagreement(model: RewardModel, clips: list[Clip]) -> float:
    """How much the ensemble members disagree about the reward where the policy now goes:
    the std across members of the per-step reward, averaged over the steps of ``clips``
    (fresh rollouts), over the std of the ensemble-mean reward across those steps (so it
    does not depend on the reward's scale). Rising while returns rise is the reward-hacking
    alarm: the policy is going where the model knows least. NaN without clips or spread."""
    if not clips or not bool(model.fitted):
        return float("nan")
    obs = np.concatenate([c.obs for c in clips])
    act = np.concatenate([c.actions for c in clips])
    nxt = np.concatenate([c.next_obs for c in clips]) if model.spec.use_next_obs else None
    r = model.member_rewards(obs, act, nxt)  # (M, N)
    spread = float(r.mean(0).std())
    if spread < 1e-12 or len(r) < 2:
        return float("nan")
    return float(r.std(0).mean() / spread)


def reward_correlation(model: RewardModel, clips: list[Clip]) -> float:
    """Pearson correlation of the ensemble-mean predicted per-step reward with the true
    one over the steps of ``clips`` (fresh rollouts). NaN if either is constant."""
    if not clips:
        return float("nan")
    obs = np.concatenate([c.obs for c in clips])
    act = np.concatenate([c.actions for c in clips])
    nxt = np.concatenate([c.next_obs for c in clips]) if model.spec.use_next_obs else None
    pred = model.member_rewards(obs, act, nxt).mean(0)
    true = np.concatenate([c.rewards for c in clips])
    if pred.std() < 1e-12 or true.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(pred, true)[0, 1])
