"""Frames of a clip, on demand: replay its stored env states, or use frames stored with it.

Collection never renders (rendering MuJoCo on a CPU costs tens of milliseconds a frame).
Clips keep the env's state before each step instead, and only the pairs a person will see
are turned into frames, by setting each state into a private render env and calling
``render()``:

>>> renderer = ClipRenderer(cfg.env)                      # doctest: +SKIP
>>> frames = renderer.frames(clip)    # (T, H, W, 3) uint8  # doctest: +SKIP

A clip without states (its env cannot restore state) falls back to the frames recorded with
it at collection. Open one renderer per thread: a MuJoCo GL context belongs to the thread
that made it.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from rlhf.clips import Clip
from rlhf.config import EnvConfig
from rlhf.environment import StateAdapter, make_env, state_adapter


class RenderError(RuntimeError):
    """A clip cannot be turned into frames; the message says why and what to do."""


class StoredFrames:
    """The frames recorded with the clip at collection (envs that cannot restore state)."""

    def frames(self, clip: Clip) -> np.ndarray:
        if clip.frames is None:
            raise RenderError(f"clip {clip.id} has no stored frames")
        return np.asarray(clip.frames, dtype=np.uint8)


class StateReplay:
    """Renders a clip by setting each of its stored states into a private ``rgb_array`` env.

    Args:
        env_cfg: the run's env config; the render env is made from it with
            ``render_mode="rgb_array"``.
        seed: reset seed of the render env (the reset only initialises it; every frame comes
            from a stored state).
    """

    def __init__(self, env_cfg: EnvConfig, seed: int = 0):
        self.env_id = env_cfg.id
        try:
            self.env: gym.Env = make_env(env_cfg, render_mode="rgb_array")
        except (ValueError, gym.error.Error) as e:
            raise RenderError(f"cannot make {env_cfg.id} with render_mode='rgb_array' for "
                              f"replay ({e}); the viewer needs an env that renders "
                              "rgb_array frames") from None
        self.env.reset(seed=seed)
        self.adapter: StateAdapter | None = state_adapter(self.env)
        self._mujoco = _mujoco_forward(self.env)

    @property
    def can_replay(self) -> bool:
        return self.adapter is not None

    def frame(self, state: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 frame of one state (S,)."""
        if self.adapter is None:
            raise RenderError(f"{self.env_id} has no restorable state; give its env class "
                              "get_state()/set_state() methods, or store frames with clips")
        try:
            self.adapter.set(self.env, np.asarray(state, dtype=np.float64))
        except (ValueError, IndexError, AssertionError) as e:
            raise RenderError(f"a stored state ({np.size(state)} values) does not fit "
                              f"{self.env_id} ({e}); was the run's env changed after the "
                              "clips were collected?") from None
        if self._mujoco is not None:
            # Positions of bodies and cameras are derived from qpos by mj_forward; without it
            # a frame would show the kinematics of whatever was computed last.
            self._mujoco()
        frame = self.env.render()
        if frame is None:
            raise RenderError(f"{self.env_id}.render() returned no frame in rgb_array mode")
        return np.asarray(frame, dtype=np.uint8)

    def frames(self, clip: Clip) -> np.ndarray:
        if clip.states is None:
            raise RenderError(f"clip {clip.id} has no stored env states to replay")
        return np.stack([self.frame(s) for s in clip.states])

    def close(self) -> None:
        u = self.env.unwrapped
        # Classic-control envs' close() calls pygame.quit(), which would also close the
        # viewer's own window in this process; without a screen they close nothing of it.
        if type(u).__module__.startswith("gymnasium.envs.classic_control"):
            u.screen = None
        self.env.close()


class ClipRenderer:
    """Frames for any clip of a run: state replay when the clip has states, else the frames
    stored with it. The render env is made on first use (a clip with stored frames needs
    none)."""

    def __init__(self, env_cfg: EnvConfig, seed: int = 0):
        self.env_cfg = env_cfg
        self.seed = seed
        self._replay: StateReplay | None = None
        self._stored = StoredFrames()

    @property
    def replay(self) -> StateReplay:
        if self._replay is None:
            self._replay = StateReplay(self.env_cfg, self.seed)
        return self._replay

    def frames(self, clip: Clip) -> np.ndarray:
        """(T, H, W, 3) uint8."""
        if clip.states is not None and self.replay.can_replay:
            return self.replay.frames(clip)
        if clip.frames is not None:
            return self._stored.frames(clip)
        raise RenderError(f"clip {clip.id} has neither env states nor frames, so it cannot "
                          f"be shown; {self.env_cfg.id} needs get_state()/set_state() methods "
                          "(or a state adapter) for the viewer to replay its clips")

    @property
    def fps(self) -> float:
        """The env's ``render_fps`` (30 where it declares none); MuJoCo envs set theirs per
        instance, so this asks the render env itself."""
        return float(self.replay.env.metadata.get("render_fps") or 30)

    def close(self) -> None:
        if self._replay is not None:
            self._replay.close()
            self._replay = None


def _mujoco_forward(env: gym.Env) -> Callable[[], None] | None:
    """A function running ``mujoco.mj_forward`` on ``env`` if it is a MuJoCo env, else None."""
    u = env.unwrapped
    model, data = getattr(u, "model", None), getattr(u, "data", None)
    if model is None or data is None or type(model).__module__.split(".")[0] != "mujoco":
        return None
    import mujoco

    return lambda: mujoco.mj_forward(model, data)
