"""The floor of a normalised score, for the benchmarks (and the learning check in tests/):
what uniformly random actions earn."""

from __future__ import annotations

import numpy as np

from rlhf.config import EnvConfig
from rlhf.teachers import ScoreFn


def random_return(env_cfg: EnvConfig, episodes: int, score: ScoreFn | None = None,
                  action_seed: int = 0, first_reset_seed: int = 0) -> float:
    """Mean return of uniformly random actions over ``episodes`` episodes (reset seeds
    ``first_reset_seed + i``): the env's own reward, or the scripted ``score``. The floor
    of a normalised score."""
    from rlhf.environment import make_env
    from rlhf.scores import ScoreReward

    env = make_env(env_cfg) if score is None else ScoreReward(make_env(env_cfg), score)
    env.action_space.seed(action_seed)
    total = []
    for ep in range(episodes):
        env.reset(seed=first_reset_seed + ep)
        ret, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            ret, done = ret + float(r), term or trunc
        total.append(ret)
    env.close()
    return float(np.mean(total))
