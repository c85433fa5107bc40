"""Making environments from config, and saving/restoring their state for later rendering.

Clips store the env's state before each step so that a viewer can replay them into frames
on demand; collection itself never renders. A state adapter knows how to read and write
that state for one family of envs:

- MuJoCo envs: ``concatenate(qpos, qvel)``;
- gymnasium's classic-control envs: their ``state`` (plus Pendulum's last torque, which its
  frame draws);
- any custom env whose unwrapped class has ``get_state() -> ndarray`` and
  ``set_state(ndarray)`` methods.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from rlhf.config import ConfigError, EnvConfig


class StateAdapter(Protocol):
    """Reads and writes an env's restorable state as a flat float64 vector (S,)."""

    name: str

    def get(self, env: gym.Env) -> np.ndarray: ...

    def set(self, env: gym.Env, state: np.ndarray) -> None: ...


class MujocoState:
    name = "mujoco"

    def get(self, env: gym.Env) -> np.ndarray:
        data = env.unwrapped.data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)

    def set(self, env: gym.Env, state: np.ndarray) -> None:
        u = env.unwrapped
        nq = u.model.nq
        u.set_state(state[:nq], state[nq:])


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
    """The adapter for ``env`` (after reset), or None when its state cannot be restored."""
    u = env.unwrapped
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        if isinstance(u, MujocoEnv):
            return MujocoState()
    except ImportError:  # pragma: no cover - mujoco is a declared dependency
        pass
    get, set_ = getattr(u, "get_state", None), getattr(u, "set_state", None)
    if callable(get) and callable(set_):
        return CustomState()
    if type(u).__module__.startswith("gymnasium.envs.classic_control"):
        return ClassicControlState()
    return None


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


# -- making envs from config -------------------------------------------------------------


def import_modules(names: list[str], key: str = "env.imports") -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"{key}: cannot import module {name!r}: {e}") from None


def resolve_env_id(env_id: str) -> str:
    """Turn ``env.id`` into a registered gymnasium id, importing/registering as needed.

    Accepts ``Id-v0``, ``module.path:Id-v0`` (import, then make) and ``module.path:ClassName``
    (registered on the fly as ``rlhf-custom/ClassName-v0``).
    """
    if ":" in env_id:
        module_name, _, attr = env_id.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"env.id: cannot import module {module_name!r} "
                              f"from entry point {env_id!r}: {e}") from None
        if attr in gym.registry:
            return attr
        target = getattr(module, attr, None)
        if isinstance(target, type) and issubclass(target, gym.Env):
            new_id = f"rlhf-custom/{attr}-v0"
            if new_id not in gym.registry:
                gym.register(id=new_id, entry_point=target)
            return new_id
        raise ConfigError(f"env.id: {env_id!r}: module {module_name!r} has no gymnasium.Env "
                          f"class or registered id named {attr!r}")
    if env_id not in gym.registry:
        # Importing the project's example envs makes their ids known by name.
        with contextlib.suppress(ImportError):
            importlib.import_module("rlhf_envs")
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"env.id: unknown environment {env_id!r}{hint}; use a registered "
                          "gymnasium id or an entry point 'module.path:ClassName'")
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
        raise ConfigError(f"env.kwargs: {env_id} rejected its arguments: {e}") from None


def env_factory(cfg: EnvConfig, record_state: bool = True) -> Callable[[], gym.Env]:
    """A thunk for SB3's VecEnv: the env, its state in ``info`` where restorable, a Monitor.

    The Monitor sits innermost so that episode returns SB3 logs are the env's true reward.
    Seeding is the VecEnv's job (``venv.seed(seed)`` seeds env i with seed + i).
    """
    from stable_baselines3.common.monitor import Monitor

    def thunk() -> gym.Env:
        env = make_env(cfg)
        env = Monitor(env)
        adapter = state_adapter(env) if record_state else None
        if adapter is not None:
            env = StateInInfo(env, adapter)
        return env

    return thunk
