"""Reach2D: steer a point mass to a target while keeping clear of a hazard disc.

Intended behaviour
    Drive the blue agent onto the green target and stay there, going *around* the red hazard
    disc rather than through it. Each reset draws a new start, target and hazard from the reset
    seed; the hazard usually sits near the straight line from start to target, so the direct
    route often crosses it.

Why it suits learning from preferences
    By eye the goal is obvious: "it went round the red disc and parked on the green dot". As a
    reward it is awkward: distance and hazard terms need relative weights, the detour is a
    trade-off between path length and clearance, and a person would also object to skimming the
    rim, which a hard in/out test misses. The env's reward below is one such hand-written
    compromise; it doubles as the scripted score for a simulated teacher, so a learned reward can
    be checked against it.

Variants (all share the dynamics, reward, state and ``score``)
    - ``rlhf_envs/Reach2D-v0``: ``Reach2DEnv``, Box(11,) float32 observation.
    - ``rlhf_envs/Reach2DPixels-v0``: ``Reach2DPixelsEnv``, (64, 64, 3) uint8 image observation.
    - ``rlhf_envs/Reach2DDict-v0``: ``Reach2DDictEnv``, Dict observation.

Dynamics (per step, no randomness after reset)
    a = clip(action, -1, 1)                                  (2,) acceleration command
    v <- clip(DAMPING * v + ACCEL * a, -VMAX, VMAX)           per component, VMAX = 0.08
    p <- p + v, then clipped to the arena [-1, 1]^2; a component that hits a wall loses its
    velocity (an inelastic wall, so the agent cannot bounce to make progress).

Reward (computed on the post-step position p', hazard centre h, radius r, target g)
    reward = -|p' - g| - hazard_cost - CTRL_COST * |a|^2
    hazard_cost = 1 + (1 - |p' - h| / r) inside the disc (so 1..2, rising toward the centre,
    which gives a gradient out of the disc), 0 outside.
    ``info`` carries the terms: ``dist_to_target``, ``in_hazard``, ``reward_dist``,
    ``reward_hazard``, ``reward_ctrl``.

Observation (``Reach2DEnv``), float32, all relative quantities are target/hazard minus agent:
    [px, py, vx / VMAX, vy / VMAX, gx - px, gy - py, hx - px, hy - py, r, d, c]
    with d = |g - p| (distance to the target) and c = |h - p| - r (clearance from the hazard's
    rim, negative inside); bounds [-1, 1] for position and scaled velocity, [-2, 2] for
    offsets, [0, 0.5] for r, [0, 2.9] for d, [-0.5, 2.9] for c. d and c are redundant for the
    policy, but not for a reward model that learns from a few hundred labels: from the
    offsets alone it has to discover a Euclidean norm, and generalised to held-out labels at
    0.63-0.67 accuracy; with d and c, at 0.82-0.87 (BENCHMARKS.md, issue 5). Observation
    design is part of making a task learnable from preferences.

Actions: Box(-1, 1, (2,), float32). Episodes: never terminate; the fixed horizon (100 steps) is
the ``max_episode_steps`` of the registration (a TimeLimit truncation).

Restorable state (``get_state`` / ``set_state``), float64, ``STATE_SIZE`` = 9:
    [px, py, vx, vy, gx, gy, hx, hy, r]   (velocity unscaled)
The frame is drawn from this vector alone and the step is deterministic, so restoring it
reproduces both the frame and all future transitions. The TimeLimit wrapper's step counter is
not part of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlhf_envs._draw import SceneCanvas, Window

ARENA = 1.0
DAMPING = 0.85
ACCEL = 0.012
# Terminal speed under constant full thrust; crossing the arena takes ~25 steps at this speed.
VMAX = ACCEL / (1.0 - DAMPING)
CTRL_COST = 0.01
STATE_SIZE = 9
MAX_HAZARD_RADIUS = 0.3

State = tuple[float, float, float, float, float, float, float, float, float]


def transition(state: Sequence[float], ax: float, ay: float) -> tuple[State, float, dict[str, Any]]:
    """One deterministic step of the task.

    Plain Python floats, not numpy: on 2-vectors numpy's per-call overhead would cost ~10x.
    Used by both ``Reach2DEnv.step`` and ``score`` so the two agree bit for bit.

    Args:
        state: (9,) [px, py, vx, vy, gx, gy, hx, hy, r].
        ax, ay: action components (clipped to [-1, 1] here; NaN is treated as 0).

    Returns:
        (next state as a 9-tuple, reward, info dict of reward terms).
    """
    px, py, vx, vy, gx, gy, hx, hy, hr = (float(v) for v in state)
    # min/max propagate NaN oddly; a NaN action would poison the state forever, so zero it.
    ax = 0.0 if ax != ax else min(1.0, max(-1.0, float(ax)))
    ay = 0.0 if ay != ay else min(1.0, max(-1.0, float(ay)))
    vx = min(VMAX, max(-VMAX, DAMPING * vx + ACCEL * ax))
    vy = min(VMAX, max(-VMAX, DAMPING * vy + ACCEL * ay))
    px += vx
    py += vy
    if px > ARENA or px < -ARENA:
        px = min(ARENA, max(-ARENA, px))
        vx = 0.0
    if py > ARENA or py < -ARENA:
        py = min(ARENA, max(-ARENA, py))
        vy = 0.0
    dist = math.hypot(gx - px, gy - py)
    dh = math.hypot(hx - px, hy - py)
    hazard = 2.0 - dh / hr if dh < hr else 0.0
    ctrl = CTRL_COST * (ax * ax + ay * ay)
    reward = -dist - hazard - ctrl
    info = {
        "dist_to_target": dist,
        "in_hazard": dh < hr,
        "reward_dist": -dist,
        "reward_hazard": -hazard,
        "reward_ctrl": -ctrl,
    }
    return (px, py, vx, vy, gx, gy, hx, hy, hr), reward, info


def sample_layout(rng: np.random.Generator) -> State:
    """Draws a start state: agent at rest, target, and a hazard near the start-target line.

    Rejection sampling keeps the start and target well outside the hazard and at least 0.8
    apart, so every episode needs real travel and the hazard is a real obstacle.
    """
    for _ in range(10_000):
        sx, sy, gx, gy = (float(v) for v in rng.uniform(-0.8, 0.8, size=4))
        dx, dy = gx - sx, gy - sy
        length = math.hypot(dx, dy)
        if length < 0.8:
            continue
        hr = float(rng.uniform(0.15, MAX_HAZARD_RADIUS))
        along = float(rng.uniform(0.35, 0.65))
        # Sideways offset: sometimes the disc blocks the straight line, sometimes it only
        # crowds it, so "keep clear" is not always the same manoeuvre.
        side = float(rng.uniform(-0.2, 0.2))
        hx = sx + along * dx - side * dy / length
        hy = sy + along * dy + side * dx / length
        if math.hypot(hx - gx, hy - gy) < hr + 0.15 or math.hypot(hx - sx, hy - sy) < hr + 0.1:
            continue
        return (sx, sy, 0.0, 0.0, gx, gy, hx, hy, hr)
    raise RuntimeError("could not sample a Reach2D layout")  # unreachable in practice


def score(clip: Any) -> np.ndarray:
    """Per-step scripted score of a clip (the intended behaviour; equals the env reward).

    Args:
        clip: object with ``actions`` (T, 2), ``rewards`` (T,), ``states`` (T, 9) float64 from
            ``get_state()`` taken before each step's action, or ``states`` None.

    Returns:
        (T,) float64. With states it replays each step from its state and action, so it does
        not trust the recorded reward; without states it returns the recorded env reward,
        which is the same quantity.
    """
    states = getattr(clip, "states", None)
    if states is None:
        return np.asarray(clip.rewards, dtype=np.float64).reshape(-1).copy()
    states = np.asarray(states, dtype=np.float64)
    actions = np.asarray(clip.actions, dtype=np.float64).reshape(len(states), 2)
    out = np.empty(len(states), dtype=np.float64)
    for t in range(len(states)):
        out[t] = transition(states[t], actions[t, 0], actions[t, 1])[1]
    return out


class Reach2DEnv(gym.Env[np.ndarray, np.ndarray]):
    """Reach the target, avoid the hazard; Box(11,) float32 observations. See module docstring.

    Args:
        render_mode: None, "rgb_array" or "human".
        render_size: side in pixels of rendered frames (the scene is square).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, render_size: int = 200) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = self._make_observation_space()
        self._state: State | None = None
        self._canvas: SceneCanvas | None = None
        self._window: Window | None = None

    # --- observation hooks: variants override these two -------------------------------
    def _make_observation_space(self) -> spaces.Space[Any]:
        low = np.array([-1, -1, -1, -1, -2, -2, -2, -2, 0, 0, -0.5], dtype=np.float32)
        high = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0.5, 2.9, 2.9], dtype=np.float32)
        return spaces.Box(low, high, dtype=np.float32)

    def _observe(self, s: State) -> Any:
        px, py, vx, vy, gx, gy, hx, hy, hr = s
        d, c = math.hypot(gx - px, gy - py), math.hypot(hx - px, hy - py) - hr
        return np.array(
            [px, py, vx / VMAX, vy / VMAX, gx - px, gy - py, hx - px, hy - py, hr, d, c],
            dtype=np.float32,
        )

    # --- gymnasium API ------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = sample_layout(self.np_random)
        if self.render_mode == "human":
            self.render()
        return self._observe(self._state), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() or set_state() before step()")
        a = np.asarray(action).reshape(2)
        self._state, reward, info = transition(self._state, a[0], a[1])
        if self.render_mode == "human":
            self.render()
        # Never terminates: fixed-horizon episodes keep clip lengths and returns comparable.
        return self._observe(self._state), reward, False, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None")
            return None
        frame = self._frame()
        if self.render_mode == "human":
            if self._window is None:
                self._window = Window(self.metadata["render_fps"])
            self._window.show(frame)
            return None
        return frame

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None

    # --- restorable state ---------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """Returns (9,) float64 [px, py, vx, vy, gx, gy, hx, hy, r], a fresh copy."""
        if self._state is None:
            raise RuntimeError("call reset() or set_state() before get_state()")
        return np.array(self._state, dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Restores a vector from ``get_state``; works on a fresh env without reset()."""
        s = np.asarray(state, dtype=np.float64)
        if s.shape != (STATE_SIZE,) or not np.all(np.isfinite(s)):
            raise ValueError(f"expected a finite ({STATE_SIZE},) state, got shape {s.shape}")
        if s[8] <= 0:
            raise ValueError("hazard radius (state[8]) must be positive")
        # Python floats: float64 -> float is exact, so the round trip is bit-identical.
        self._state = tuple(float(v) for v in s)  # type: ignore[assignment]

    # --- helpers ------------------------------------------------------------------------
    def _frame(self) -> np.ndarray:
        if self._state is None:
            raise RuntimeError("call reset() or set_state() before render()")
        if self._canvas is None:
            self._canvas = SceneCanvas(self.render_size)
        return self._canvas.draw(self._state)


class Reach2DPixelsEnv(Reach2DEnv):
    """Reach2D observed through pixels: (obs_size, obs_size, 3) uint8 HWC images.

    The observation is the same drawing as ``render()`` at a smaller size, made from the state,
    so it needs no window. Default 64x64 (large enough for SB3's NatureCNN, which needs >= 36).
    """

    def __init__(
        self, render_mode: str | None = None, render_size: int = 200, obs_size: int = 64
    ) -> None:
        self.obs_size = int(obs_size)
        self._obs_canvas = SceneCanvas(self.obs_size)
        super().__init__(render_mode=render_mode, render_size=render_size)

    def _make_observation_space(self) -> spaces.Space[Any]:
        return spaces.Box(0, 255, shape=(self.obs_size, self.obs_size, 3), dtype=np.uint8)

    def _observe(self, s: State) -> np.ndarray:
        return self._obs_canvas.draw(s)


class Reach2DDictEnv(Reach2DEnv):
    """Reach2D with a Dict observation (same numbers as ``Reach2DEnv``, grouped):

    - ``agent``: (4,) [px, py, vx / VMAX, vy / VMAX]
    - ``target``: (3,) [gx - px, gy - py, d]
    - ``hazard``: (4,) [hx - px, hy - py, r, c]

    gymnasium sorts Dict keys, so ``spaces.flatten`` order is agent(4), hazard(4), target(3).
    """

    def _make_observation_space(self) -> spaces.Space[Any]:
        return spaces.Dict(
            {
                "agent": spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32),
                "target": spaces.Box(
                    np.array([-2, -2, 0], dtype=np.float32),
                    np.array([2, 2, 2.9], dtype=np.float32),
                    dtype=np.float32,
                ),
                "hazard": spaces.Box(
                    np.array([-2, -2, 0, -0.5], dtype=np.float32),
                    np.array([2, 2, 0.5, 2.9], dtype=np.float32),
                    dtype=np.float32,
                ),
            }
        )

    def _observe(self, s: State) -> dict[str, np.ndarray]:
        flat = super()._observe(s)
        # Copies, not views: consumers may write into one entry of an observation.
        return {"agent": flat[0:4].copy(), "target": flat[[4, 5, 9]],
                "hazard": flat[[6, 7, 8, 10]]}
