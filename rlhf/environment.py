"""Making environments from config, and saving/restoring their state for later rendering.

Clips store the env's state before each step so that a viewer can replay them into frames
on demand; collection itself never renders. A state adapter knows how to read and write
that state for one family of envs:

- MuJoCo envs: ``concatenate(qpos, qvel[, act])``, restored with ``mj_forward`` so that the
  body poses a frame shows are computed from the restored qpos;
- gymnasium's classic-control envs: their ``state`` (plus Pendulum's last torque, which its
  frame draws);
- any custom env implementing ``RestorableEnv``: two methods on the unwrapped env class,
  ``get_state() -> ndarray`` and ``set_state(ndarray)`` (see docs/custom_envs.md).

An env with none of these still trains. When a person labels it, the viewer falls back to
frames recorded at collection: ``FrameRecorder`` renders, for the clips the collector picks,
the frame before each step into ``info["frame"]`` (see ``needs_recorded_frames``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from rlhf.config import Config, ConfigError, EnvConfig
from rlhf.registry import describe_exception, import_user_module

# MuJoCo picks its OpenGL backend when it is first imported. GLFW needs a display; on a
# headless Linux machine EGL works (OSMesa is often missing). Set before any env is made.
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                             or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")


class EnvError(ConfigError):
    """The environment cannot be used as it is: NaN observations, spaces it does not keep,
    state it does not restore, frames it cannot render. The message names the env, the
    problem and the fix (``rlhf check-env`` gives the full report)."""


@runtime_checkable
class RestorableEnv(Protocol):
    """The two methods a custom env (its unwrapped class) implements for state replay.

    ``get_state()`` returns a flat float vector (S,) holding everything ``step()`` and
    ``render()`` depend on (positions, velocities, the goal's layout, timers), as a copy.
    ``set_state(state)`` writes such a vector back, so that the next ``render()`` shows that
    state and the next ``step(a)`` continues from it exactly; it must work on an env that was
    reset with any seed.
    """

    def get_state(self) -> np.ndarray: ...

    def set_state(self, state: np.ndarray) -> None: ...


class StateAdapter(Protocol):
    """Reads and writes an env's restorable state as a flat float64 vector (S,)."""

    name: str

    def get(self, env: gym.Env) -> np.ndarray: ...

    def set(self, env: gym.Env, state: np.ndarray) -> None: ...


class MujocoState:
    """``concatenate(qpos, qvel)``, plus actuator activations ``act`` where the model has any.

    Writes ``data`` directly instead of calling ``env.set_state(qpos, qvel)``, so a subclass
    that redefines ``set_state`` cannot break it, and always runs ``mj_forward`` afterwards:
    body and camera poses are derived from qpos, and a frame rendered without it would show
    whatever kinematics were computed last.
    """

    name = "mujoco"

    def get(self, env: gym.Env) -> np.ndarray:
        data = env.unwrapped.data
        return np.concatenate([data.qpos, data.qvel, data.act]).astype(np.float64)

    def set(self, env: gym.Env, state: np.ndarray) -> None:
        import mujoco

        u = env.unwrapped
        model, data = u.model, u.data
        nq, nv, na = model.nq, model.nv, model.na
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (nq + nv + na,):
            raise ValueError(f"expected a MuJoCo state of {nq + nv + na} values (qpos {nq}, "
                             f"qvel {nv}, act {na}), got shape {state.shape}")
        data.qpos[:] = state[:nq]
        data.qvel[:] = state[nq:nq + nv]
        if na:
            data.act[:] = state[nq + nv:]
        mujoco.mj_forward(model, data)


class ClassicControlState:
    """``env.unwrapped.state``, plus ``last_u`` (NaN for None) where the env has one."""

    name = "classic-control"

    def get(self, env: gym.Env) -> np.ndarray:
        u = env.unwrapped
        state = np.asarray(u.state, dtype=np.float64).ravel()
        if hasattr(u, "last_u"):
            last = np.nan if u.last_u is None else float(np.asarray(u.last_u).ravel()[0])
            state = np.append(state, last)
        return state

    def set(self, env: gym.Env, state: np.ndarray) -> None:
        u = env.unwrapped
        if hasattr(u, "last_u"):
            state, last = state[:-1], state[-1]
            u.last_u = None if np.isnan(last) else float(last)
        u.state = np.array(state, dtype=np.float64)


class CustomState:
    """The env's own ``get_state`` / ``set_state`` methods."""

    name = "custom"

    def get(self, env: gym.Env) -> np.ndarray:
        return np.asarray(env.unwrapped.get_state(), dtype=np.float64).ravel().copy()

    def set(self, env: gym.Env, state: np.ndarray) -> None:
        env.unwrapped.set_state(np.asarray(state, dtype=np.float64))


def state_adapter(env: gym.Env) -> StateAdapter | None:
    """The adapter for ``env`` (after reset), or None when its state cannot be restored.

    An env's own ``get_state``/``set_state`` win over the built-in adapters: its author knows
    what its frames and steps depend on. (MuJoCo envs inherit a ``set_state(qpos, qvel)``
    without a ``get_state``; defining both marks the one-vector protocol.)
    """
    u = env.unwrapped
    if callable(getattr(u, "get_state", None)) and callable(getattr(u, "set_state", None)):
        return CustomState()
    if _is_mujoco(u):
        return MujocoState()
    if type(u).__module__.startswith("gymnasium.envs.classic_control"):
        return ClassicControlState()
    return None


def _is_mujoco(u: gym.Env) -> bool:
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    except ImportError:  # pragma: no cover - mujoco is a declared dependency
        return False
    return isinstance(u, MujocoEnv)


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

    An area average (each output pixel is the mean of the input block it covers), which keeps
    thin lines visible where subsampling would drop them. Frames already small enough come
    back as a copy, so a renderer that reuses its buffer cannot change a recorded frame.
    """
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return np.array(frame, dtype=np.uint8, copy=True)
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    # Block boundaries: output pixel i covers input rows [rows[i], rows[i + 1]).
    rows = (np.arange(out_h) * h) // out_h
    cols = (np.arange(out_w) * w) // out_w
    sums = np.add.reduceat(np.add.reduceat(frame.astype(np.uint32), rows, axis=0), cols, axis=1)
    counts = (np.diff(np.append(rows, h))[:, None] * np.diff(np.append(cols, w))[None, :])
    return ((sums + counts[..., None] // 2) // counts[..., None]).astype(np.uint8)


def needs_recorded_frames(cfg: Config) -> bool:
    """Whether clips must carry frames recorded during rollouts: a person labels
    (``teacher.kind: human``) and the env's state cannot be restored for replay.

    A simulated teacher needs no frames, and restorable envs are replayed on demand, so both
    never render during collection. Makes (and closes) one env to find out.
    """
    if cfg.teacher.kind != "human":
        return False
    env = make_env(cfg.env)
    try:
        env.reset(seed=cfg.seed)
        return state_adapter(env) is None
    finally:
        env.close()


# -- making envs from config -------------------------------------------------------------


def import_modules(names: list[str], key: str = "env.imports") -> None:
    for name in names:
        import_user_module(name, key)


def resolve_env_id(env_id: str) -> str:
    """Turn ``env.id`` into a registered gymnasium id, importing/registering as needed.

    Accepts ``Id-v0``, ``namespace/Id-v0`` (importing a module named like the namespace if
    the id is not yet known, as ``rlhf_envs/Reach2D-v0`` does), ``module.path:Id-v0``
    (import, then make) and ``module.path:ClassName`` (a ``gymnasium.Env`` subclass,
    registered on the fly as ``rlhf-custom/ClassName-v0``).
    """
    if ":" in env_id:
        module_name, _, attr = env_id.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"env.id: {env_id!r} is not an entry point; write "
                              "'module.path:ClassName' or 'module.path:Id-v0'")
        module = import_user_module(module_name, "env.id")
        if attr in gym.registry:
            return attr
        target = getattr(module, attr, None)
        if isinstance(target, type) and issubclass(target, gym.Env):
            new_id = f"rlhf-custom/{attr}-v0"
            if new_id not in gym.registry or gym.spec(new_id).entry_point is not target:
                gym.register(id=new_id, entry_point=target)
            return new_id
        if target is not None:
            raise ConfigError(f"env.id: {env_id!r} is a {type(target).__name__}, not a "
                              "gymnasium.Env subclass; point env.id at the env class, or "
                              "register the env and give its id ('module.path:Id-v0')")
        names = [n for n, v in vars(module).items()
                 if isinstance(v, type) and issubclass(v, gym.Env) and v.__module__ == module_name]
        close = difflib.get_close_matches(attr, names + list(gym.registry), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"env.id: module {module_name!r} has no env class and registers no "
                          f"id named {attr!r}{hint}")
    if env_id not in gym.registry:
        # Importing the project's example envs makes their ids known by name; an id in
        # namespace 'pkg' is tried as registered by importing 'pkg'.
        for module_name in ("rlhf_envs", env_id.partition("/")[0] if "/" in env_id else None):
            if module_name:
                with contextlib.suppress(ImportError):
                    importlib.import_module(module_name)
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"env.id: unknown environment {env_id!r}{hint}; use a registered "
                          "gymnasium id, an entry point 'module.path:ClassName', or list the "
                          "module that registers it in env.imports")
    return env_id


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env as configured (no wrappers of ours)."""
    import_modules(cfg.imports)
    env_id = resolve_env_id(cfg.id)
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        return gym.make(env_id, render_mode=render_mode, **kwargs)
    except TypeError as e:
        if render_mode is not None and "render_mode" in str(e):
            raise EnvError(f"{cfg.id}: its constructor does not take render_mode: add a "
                           "render_mode=None argument and support 'rgb_array' so clips can "
                           "be shown") from None
        raise ConfigError(f"env.kwargs: {cfg.id} rejected its arguments: {e}") from None
    except gym.error.Error as e:
        raise ConfigError(f"env.id: gymnasium cannot make {cfg.id}: {e}") from None
    except Exception as e:  # the env's constructor failed; say where instead of a traceback
        raise EnvError(f"{cfg.id}: making the env raised {describe_exception(e)}") from None


def env_factory(cfg: EnvConfig, record_state: bool = True,
                record_frames: bool = False) -> Callable[[], gym.Env]:
    """A thunk for SB3's VecEnv: the env, its state in ``info`` where restorable, a Monitor,
    and a check that observations and rewards stay finite.

    ``record_frames`` (see ``needs_recorded_frames``) makes the env with
    ``render_mode="rgb_array"`` and adds a ``FrameRecorder`` (off until the collector turns
    it on), frames at most ``cfg.frame_size`` pixels on the long side.

    The Monitor sits innermost so that episode returns SB3 logs are the env's true reward.
    Seeding is the VecEnv's job (``venv.seed(seed)`` seeds env i with seed + i).
    """
    from stable_baselines3.common.monitor import Monitor

    def thunk() -> gym.Env:
        env = make_env(cfg, render_mode="rgb_array" if record_frames else None)
        env = Monitor(env)
        adapter = state_adapter(env) if record_state else None
        if adapter is not None:
            env = StateInInfo(env, adapter)
        if record_frames:
            env = FrameRecorder(env, cfg.id, cfg.frame_size)
        return FiniteCheck(env, cfg.id)

    return thunk


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
