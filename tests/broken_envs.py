"""Deliberately broken environments for the check-env and ``rlhf train`` error tests.

Importable as ``broken_envs`` (from the tests directory); each class has one defect, and
``SlideEnv`` itself is healthy. Entry points like ``broken_envs:NaNObsEnv`` work from the
command line run in this directory.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class SlideEnv(gym.Env):
    """A puck sliding on a line with friction; reward -|x - 1|. Healthy.

    State [x, v, t]; observation [x, v] float32; 60-step episodes; restorable; rgb_array
    frames draw the puck from the state alone.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    horizon = 60

    def __init__(self, render_mode: str | None = None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.x, self.v, self.t = 0.0, 0.0, 0

    def _obs(self) -> Any:
        return np.array([self.x, self.v], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.v, self.t = float(self.np_random.uniform(-2, 2)), 0.0, 0
        return self._obs(), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action).ravel()[0], -1, 1))
        self.v = 0.8 * self.v + 0.1 * a
        self.x = float(np.clip(self.x + self.v, -10, 10))
        self.t += 1
        return self._obs(), -abs(self.x - 1.0), False, self.t >= self.horizon, {}

    def get_state(self) -> np.ndarray:
        return np.array([self.x, self.v, self.t], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        self.x, self.v, self.t = float(state[0]), float(state[1]), int(state[2])

    def render(self) -> np.ndarray | None:
        frame = np.zeros((8, 42, 3), dtype=np.uint8)
        frame[:, int(np.clip((self.x + 10) * 2, 0, 41))] = 255
        return frame


class NoRenderEnv(SlideEnv):
    """No ``rgb_array`` render mode: a person cannot see its clips."""

    metadata = {"render_modes": [], "render_fps": 30}

    def render(self) -> None:
        return None


class WrongSpaceEnv(SlideEnv):
    """Declares three observation entries but returns two."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)


class ForgetfulStateEnv(SlideEnv):
    """``get_state`` leaves out the velocity, so a restored env does not continue alike."""

    def get_state(self) -> np.ndarray:
        return np.array([self.x, self.t], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        self.x, self.t = float(state[0]), int(state[1])


class NaNObsEnv(SlideEnv):
    """The velocity turns NaN on the third step of every episode."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.t == 3:
            self.v = float("nan")
            obs = self._obs()
        return obs, reward, terminated, truncated, info


class LateNaNEnv(SlideEnv):
    """Healthy through any short check; NaN observations from step 40 of an episode on."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.t >= 40:
            obs = np.array([np.nan, self.v], dtype=np.float32)
        return obs, reward, terminated, truncated, info


class StatelessEnv(SlideEnv):
    """No ``get_state``/``set_state``: trains, but the viewer needs recorded frames."""

    get_state = None  # type: ignore[assignment]
    set_state = None  # type: ignore[assignment]


class TrailEnv(SlideEnv):
    """Draws a trail of past positions, which the saved state does not hold."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.trail: list[float] = []
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.trail.append(self.x)
        return super().step(action)

    def render(self) -> np.ndarray:
        frame = super().render()
        for x in getattr(self, "trail", [])[-10:]:
            frame[0, int(np.clip((x + 10) * 2, 0, 41))] = 128
        return frame


class CrashingEnv(SlideEnv):
    """Its simulator fails mid-run: ``step`` raises once this instance has taken more than
    ``$RLHF_TEST_CRASH_AFTER`` steps (unset: healthy, so a run can resume once "fixed"); the
    exception is the builtin named by ``$RLHF_TEST_CRASH_TYPE`` (default RuntimeError)."""

    def step(self, action):
        import builtins
        import os

        self.steps_taken = getattr(self, "steps_taken", 0) + 1
        limit = os.environ.get("RLHF_TEST_CRASH_AFTER")
        if limit is not None and self.steps_taken > int(limit):
            kind = getattr(builtins, os.environ.get("RLHF_TEST_CRASH_TYPE", "RuntimeError"))
            raise kind("simulator lost contact")
        return super().step(action)
