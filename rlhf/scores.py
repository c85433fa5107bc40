"""Scoring functions for simulated teachers on built-in tasks whose own reward cannot rank
clips (``teacher.score: rlhf.scores:NAME``). Each maps a clip to per-step scores (T,)."""

from __future__ import annotations

import numpy as np

from rlhf.clips import Clip


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
