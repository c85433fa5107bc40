"""The gymnasium wrappers around each single env (``rlhf.environment.env_factory`` stacks
them), and ``EnvError``, which they raise.

- ``StateInInfo``: the env's state before each step in ``info["state"]`` (for replay);
- ``FrameRecorder``: for envs that cannot restore state, the frame before each step in
  ``info["frame"]`` while the collector records (``downscale_frame`` shrinks it);
- ``FiniteCheck``: the first NaN or infinite observation or reward, and any exception the
  env raises, as an ``EnvError`` naming the env and the step.

The VecEnv wrapper that swaps in the learned reward is ``rlhf.wrappers.LearnedRewardVecEnv``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlhf.errors import ConfigError
from rlhf.registry import describe_exception
from rlhf.states import StateAdapter


class EnvError(ConfigError):
    """The environment cannot be used as it is: NaN observations, spaces it does not keep,
    state it does not restore, frames it cannot render. The message names the env, the
    problem and the fix (``rlhf check-env`` gives the full report)."""


class StateInInfo(gym.Wrapper):
    """Puts the env's state from *before* each step into ``info["state"]`` (S,).

    The state before the action is the one whose frame shows the observation the agent acted
    on, so a clip's frames line up with its observations.
    """

    def __init__(self, env: gym.Env, adapter: StateAdapter):
        super().__init__(env)
        self.adapter = adapter
        self._state: np.ndarray | None = None

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._state = self.adapter.get(self.env)
        return obs, info

    def step(self, action: Any):
        before = self._state
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._state = self.adapter.get(self.env)
        info["state"] = before
        return obs, reward, terminated, truncated, info


class FrameRecorder(gym.Wrapper):
    """While recording, puts the frame of the state *before* each step into ``info["frame"]``
    (H, W, 3) uint8, downscaled to at most ``max_side`` pixels on its long side.

    For envs whose state cannot be restored (no replay), and only for the clips a person may
    be shown: the collector turns recording on and off per env at clip boundaries through
    ``VecEnv.env_method("set_recording", flag, indices=[i])``. Rendering right before the
    step, rather than after the previous one, keeps frame t on the observation the agent acted
    on at step t even across a VecEnv's auto-reset: the reset happens between two steps, so the
    next render shows the reset state. Not recording, a step costs one attribute check.

    The env must have been made with ``render_mode="rgb_array"``.
    """

    def __init__(self, env: gym.Env, env_id: str, max_side: int):
        super().__init__(env)
        self.env_id = env_id
        self.max_side = max_side
        self.recording = False

    def set_recording(self, flag: bool) -> None:
        self.recording = bool(flag)

    def step(self, action: Any):
        if not self.recording:
            return self.env.step(action)
        frame = self.frame()
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["frame"] = frame
        return obs, reward, terminated, truncated, info

    def frame(self) -> np.ndarray:
        """(H', W', 3) uint8 frame of the env's current state, downscaled."""
        frame = self.env.render()
        if (not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] != 3
                or frame.dtype != np.uint8 or frame.size == 0):
            got = (f"an array of shape {frame.shape} and dtype {frame.dtype}"
                   if isinstance(frame, np.ndarray) else repr(type(frame).__name__))
            raise EnvError(f"{self.env_id}: render() in rgb_array mode returned {got}: return "
                           "an (H, W, 3) uint8 array (a person needs frames to compare clips)")
        return downscale_frame(frame, self.max_side)


def downscale_frame(frame: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) uint8 with max(h, w) <= max_side, aspect ratio kept.

    Pillow's box filter: an area average (each output pixel is the mean of the input area it
    covers), which keeps thin lines visible where subsampling would drop them. Frames already
    small enough come back as a copy, so a renderer that reuses its buffer cannot change a
    recorded frame.
    """
    from PIL import Image

    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return np.array(frame, dtype=np.uint8, copy=True)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow's order: (w, h)
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.shape[2] == 3:
        return np.array(Image.fromarray(frame).resize(size, Image.Resampling.BOX))
    # Any other channel count (Pillow would premultiply an RGBA frame's alpha): per channel.
    return np.stack([np.asarray(Image.fromarray(frame[..., c]).resize(size, Image.Resampling.BOX))
                     for c in range(frame.shape[2])], axis=-1)


class FiniteCheck(gym.Wrapper):
    """Raises ``EnvError`` at the first NaN or infinite observation or reward, and for any
    exception the env's own ``reset`` or ``step`` raises (with the step where it happened).

    A NaN that reached the reward model would poison its weights for good and the agent's
    next update would fail somewhere deep inside torch; here it is reported with the step
    where it appeared. Integer observations (images) cannot hold NaN and are not scanned.
    """

    def __init__(self, env: gym.Env, env_id: str):
        super().__init__(env)
        self.env_id = env_id
        self._steps = 0

    def reset(self, **kwargs: Any):
        try:
            obs, info = self.env.reset(**kwargs)
        except EnvError:
            raise
        except Exception as e:  # the user's code: one line naming the env, not a traceback
            raise EnvError(f"{self.env_id}: reset() raised {describe_exception(e)}") from e
        self._steps = 0
        if (bad := nonfinite(obs)) is not None:
            raise EnvError(f"{self.env_id}: reset() returned a non-finite observation "
                           f"({bad}); fix the env so observations are always finite numbers")
        return obs, info

    def step(self, action: Any):
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except EnvError:
            raise
        except Exception as e:
            raise EnvError(f"{self.env_id}: step {self._steps + 1} of an episode raised "
                           f"{describe_exception(e)}") from e
        self._steps += 1
        if (bad := nonfinite(obs)) is not None:
            raise EnvError(f"{self.env_id}: step {self._steps} of an episode returned a "
                           f"non-finite observation ({bad}); fix the env so observations "
                           "are always finite numbers")
        if not np.isfinite(reward):
            raise EnvError(f"{self.env_id}: step {self._steps} of an episode returned reward "
                           f"{reward}; fix the env so rewards are always finite numbers")
        return obs, reward, terminated, truncated, info


def nonfinite(obs: Any) -> str | None:
    """None if every float in ``obs`` (array or dict of arrays) is finite, else a short
    description of the first offending entry, e.g. ``"obs[2] = nan"``."""
    items = obs.items() if isinstance(obs, dict) else [(None, obs)]
    for key, value in items:
        arr = np.asarray(value)
        if arr.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            where = np.unravel_index(int(np.argmax(bad)), arr.shape) if arr.ndim else ()
            name = "obs" if key is None else f"obs[{key!r}]"
            index = "".join(f"[{i}]" for i in where)
            return f"{name}{index} = {arr[where] if arr.ndim else arr.item()}"
    return None
