"""Saving and restoring an env's state, so that clips can be replayed into frames later.

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
frames recorded at collection (``rlhf.env_wrappers.FrameRecorder``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


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
