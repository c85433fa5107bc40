"""A scripted Reach2D controller with four parameters whose best setting is a matter of taste,
for preferential Bayesian optimisation (``rlhf tune configs/tune_reach2d.yaml``).

Parameters (``controller(params)``)
    speed       cruise speed as a share of the env's top speed (0.2 .. 1)
    clearance   extra margin kept around the hazard's rim, arena units (0 .. 0.3)
    smoothing   low-pass of the thrust command, 0 = none (0 .. 0.9)
    brake       distance to the target at which it starts slowing down (0.05 .. 0.8, log)

How it steers: the desired velocity points at the target; within a band around the
hazard (its radius plus ``clearance``, plus a look-ahead) it turns along the rim, on the
side the target lies, and pushes outward when inside the margin. Thrust is whatever makes
the velocity reach the desired one in one step (clipped to [-1, 1]), low-passed by
``smoothing``.

The taste (``utility``, the simulated teacher's hidden score): per step (``cost``), get
there soon (the distance to the target), never touch the disc (3 inside it), keep a
comfortable 0.08 of daylight from its rim (a penalty growing as the gap closes), and no
jerky thrust (3 times the squared change of thrust). Fast cruising overshoots and skims, a
wide berth wastes time, heavy smoothing is sluggish, light smoothing is jerky: the best
setting is inside the box (near speed 0.75, clearance 0.08, smoothing 0.3, brake 0.4), not
at a corner. A person's satisfaction saturates: a clip's utility is
``exp(-total cost / SATISFACTION_SCALE)``, in (0, 1], spread evenly over its steps so that
the teacher's sum is that number. Every bad setting is about equally bad; the good ones
differ, and only about 2% of the box is within 0.05 (normalised) of the best (a Sobol
sample, ``scripts/tune_benchmark.py``). A clip of several episodes (``tune.starts``) scores
each episode's satisfaction and sums them. Being monotone in the cost, the transform changes
no answer of an oracle or a mistaken teacher; it is what makes regret measure the search
among good settings rather than the escape from the bad ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from rlhf_envs.reach2d import ACCEL, DAMPING, VMAX

COMFORT = 0.08
"""The clearance from the hazard's rim below which the taste starts to object."""
LOOKAHEAD = 0.25
JERK = 3.0
"""Weight of the squared change of thrust per step in the cost."""
SATISFACTION_SCALE = 20.0
"""Cost at which satisfaction has fallen to 1/e; a good setting's clip costs about 25."""


def controller(params: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """A fresh policy (obs (11,) -> action (2,)) for one episode with these parameters."""
    speed = float(params["speed"]) * VMAX
    clearance = float(params["clearance"])
    alpha = float(params["smoothing"])
    brake = float(params["brake"])
    last = np.zeros(2)

    def policy(obs: np.ndarray) -> np.ndarray:
        nonlocal last
        vx, vy = obs[2] * VMAX, obs[3] * VMAX
        gx, gy, hx, hy, r, d = obs[4], obs[5], obs[6], obs[7], obs[8], obs[9]
        ux, uy = (gx / d, gy / d) if d > 1e-9 else (0.0, 0.0)
        dh = math.hypot(hx, hy)  # the hazard's centre, relative to the agent
        margin = r + clearance
        if dh < margin + LOOKAHEAD and dh > 1e-9:
            ox, oy = -hx / dh, -hy / dh  # away from the centre
            # Along the rim, on the side of the target.
            tx, ty = -oy, ox
            if tx * ux + ty * uy < 0:
                tx, ty = -tx, -ty
            ahead = (hx * ux + hy * uy) > 0  # the disc is in the way, not behind
            w = min(1.0, (margin + LOOKAHEAD - dh) / LOOKAHEAD) if ahead else 0.0
            push = max(0.0, margin - dh) / max(margin, 1e-9)
            ux = (1 - w) * ux + w * tx + 2.0 * push * ox
            uy = (1 - w) * uy + w * ty + 2.0 * push * oy
            n = math.hypot(ux, uy)
            ux, uy = (ux / n, uy / n) if n > 1e-9 else (0.0, 0.0)
        want = speed * min(1.0, d / brake)
        raw = np.clip([(want * ux - DAMPING * vx) / ACCEL, (want * uy - DAMPING * vy) / ACCEL],
                      -1.0, 1.0)
        last = alpha * last + (1 - alpha) * raw
        return last.astype(np.float32)

    return policy


def episode_ends(clip: Any) -> list[int]:
    """Where each episode of a clip ends (exclusive indices; a tuning clip may hold several
    episodes one after another, ``tune.starts``)."""
    ends = (np.flatnonzero(np.asarray(clip.dones, dtype=bool)[:-1]) + 1).tolist()
    return [*ends, len(clip.dones)]


def cost(clip: Any) -> np.ndarray:
    """Per-step discomfort (T,) float64 of a clip of Reach2D (needs its states, (T, 9), and
    actions, (T, 2)); lower is better. Thrust changes across an episode boundary are not
    jerk."""
    from rlhf_envs.reach2d import transition

    states = np.asarray(clip.states, dtype=np.float64)
    actions = np.asarray(clip.actions, dtype=np.float64).reshape(len(states), 2)
    out = np.empty(len(states))
    for t in range(len(states)):
        nxt, _, info = transition(states[t], actions[t, 0], actions[t, 1])
        px, py, _, _, _, _, hx, hy, r = nxt
        gap = math.hypot(hx - px, hy - py) - r
        touch = 3.0 if gap < 0 else 0.0
        skim = 2.0 * max(0.0, COMFORT - max(gap, 0.0)) / COMFORT
        out[t] = info["dist_to_target"] + touch + skim
    jerk = np.zeros(len(states))
    begin = 0
    for end in episode_ends(clip):
        a = actions[begin:end]
        jerk[begin:end] = np.sum(np.diff(a, axis=0, prepend=a[:1]) ** 2, axis=1)
        begin = end
    return out + JERK * jerk


def utility(clip: Any) -> np.ndarray:
    """The taste the simulated teacher sums: (T,) float64, each step of an episode of
    length L ``exp(-episode cost / SATISFACTION_SCALE) / L``, so a clip's total is the
    satisfaction summed over its episodes."""
    c = cost(clip)
    out = np.empty(len(c))
    begin = 0
    for end in episode_ends(clip):
        out[begin:end] = math.exp(-float(c[begin:end].sum()) / SATISFACTION_SCALE) / (end - begin)
        begin = end
    return out
