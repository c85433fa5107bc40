"""``rlhf eval`` of a tuning run: the recommended parameters' behaviour, scored by the env's
own reward and recorded to video by the same code as a trained agent's.

``BehaviourAgent`` gives a behaviour the ``predict`` of an SB3 policy, so that
``evaluate_policy`` and ``rlhf.video.VideoRecorder`` drive it unchanged: a fresh policy per
env at every episode start (a behaviour's policy may keep state within an episode).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlhf.tune.behaviour import Behaviour, Policy, make_policy


class BehaviourAgent:
    """``behaviour(params)`` for a vectorised env of ``n_envs`` envs."""

    def __init__(self, behaviour: Behaviour, params: dict[str, Any], n_envs: int = 1):
        self.behaviour, self.params = behaviour, dict(params)
        self._policies: list[Policy] = [make_policy(behaviour, params) for _ in range(n_envs)]

    def predict(self, obs: Any, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Actions (n_envs, *act) for batched observations (n_envs, *obs) or a dict of them;
        ``episode_start`` (n_envs,) bool: whose policy starts afresh."""
        n = len(self._policies)
        if episode_start is not None:
            for i in np.flatnonzero(np.asarray(episode_start, dtype=bool)):
                self._policies[i] = make_policy(self.behaviour, self.params)
        actions = []
        for i in range(n):
            one = {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]
            actions.append(np.asarray(self._policies[i](one)))
        return np.stack(actions), None
