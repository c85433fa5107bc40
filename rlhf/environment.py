"""Making environments from ``env.id``: a registered gymnasium id, ``namespace/Id-v0``,
``module.path:Id-v0`` or ``module.path:ClassName`` (``resolve_env_id``), one env as configured
(``make_env``), and the wrapped env SB3's VecEnv runs (``env_factory``).

The pieces live in their own modules and are importable from here too:

- ``rlhf.states``: saving and restoring an env's state for replay (``state_adapter``,
  ``MujocoState``, ``ClassicControlState``, ``CustomState``, ``RestorableEnv``);
- ``rlhf.env_wrappers``: the wrappers around each env (``StateInInfo``, ``FrameRecorder``,
  ``FiniteCheck``) and ``EnvError``;
- ``rlhf.display``: ``MUJOCO_GL`` for headless rendering, set by ``make_env`` (importing this
  module sets no environment variable).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable

import gymnasium as gym

from rlhf.config import Config, ConfigError, EnvConfig
from rlhf.display import headless_mujoco_gl
from rlhf.env_wrappers import (
    EnvError,
    FiniteCheck,
    FrameRecorder,
    StateInInfo,
    downscale_frame,
    nonfinite,
)
from rlhf.registry import describe_exception, import_user_module
from rlhf.states import (
    ClassicControlState,
    CustomState,
    MujocoState,
    RestorableEnv,
    StateAdapter,
    state_adapter,
)

__all__ = [
    "ClassicControlState", "CustomState", "EnvError", "FiniteCheck", "FrameRecorder",
    "MujocoState", "RestorableEnv", "StateAdapter", "StateInInfo", "describe_exception",
    "downscale_frame", "env_factory", "import_modules", "make_env", "needs_recorded_frames",
    "nonfinite", "resolve_env_id", "state_adapter",
]


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
    """One env as configured (no wrappers of ours).

    First sets ``MUJOCO_GL=egl`` where Linux has no display and the user set no backend
    (``rlhf.display.headless_mujoco_gl``): MuJoCo picks its OpenGL backend when it is first
    imported, which may be by the modules this imports or by the env itself.
    """
    headless_mujoco_gl()
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
