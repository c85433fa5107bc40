"""The SB3 settings a config may give (``agent.kwargs``), checked before SB3 sees them.

SB3 checks few of its constructor's values and accepts NaN, infinities and giant sizes it
then tries to allocate; here each known setting has a type and a range, unknown names get
a did-you-mean, and the names rlhf or SB3 set themselves are refused. Kept apart from
``rlhf.agent`` (which builds the algorithm) because it is a table, not a stage.
"""

from __future__ import annotations

import difflib
import inspect
import math

from rlhf.config import MAX_LAYERS, WIDTH, Bound, ConfigError

MAX_ROLLOUT = 2**24
"""Most transitions in one rollout (``n_steps * n_envs``): the buffer holds each one's obs."""

# Ranges of the SB3 settings a config may give (``agent.kwargs``), checked before SB3 sees
# them: SB3 checks few of them, and accepts NaN and infinities, or giant sizes it then
# tries to allocate. Each is (int or float, range, None allowed).
_KWARG_RANGES: dict[str, tuple[type, Bound, bool]] = {
    "learning_rate": (float, Bound(0, 1, low_open=True, why="the optimiser's step size"),
                      False),
    "n_steps": (int, Bound(1, 10**6, why="steps per env per rollout"), False),
    "batch_size": (int, Bound(2, MAX_ROLLOUT, why="SB3 needs at least 2"), False),
    "n_epochs": (int, Bound(1, 10_000), False),
    "gamma": (float, Bound(0, 1, cap=False), False),
    "gae_lambda": (float, Bound(0, 1, cap=False), False),
    "clip_range": (float, Bound(0, 10, low_open=True), False),
    "clip_range_vf": (float, Bound(0, 1e6, low_open=True, why="or null: no clipping"), True),
    "ent_coef": (float, Bound(0, 100), False),
    "vf_coef": (float, Bound(0, 100), False),
    "max_grad_norm": (float, Bound(0, 1e9, low_open=True), False),
    "target_kl": (float, Bound(0, 100, low_open=True, why="or null: no early stop"), True),
    "sde_sample_freq": (int, Bound(-1, 10**6, why="-1 = once per rollout"), False),
    "stats_window_size": (int, Bound(1, 10**6), False),
    "rms_prop_eps": (float, Bound(0, 1, low_open=True), False),
    # Off-policy (SAC, TD3)
    "buffer_size": (int, Bound(1, 10**8, why="transitions the replay buffer holds"), False),
    "learning_starts": (int, Bound(0, 10**10), False),
    "tau": (float, Bound(0, 1, low_open=True, cap=False), False),
    "train_freq": (int, Bound(1, 10**6), False),
    "gradient_steps": (int, Bound(-1, 10**6, why="-1 = as many as env steps"), False),
    "target_update_interval": (int, Bound(1, 10**6), False),
    "policy_delay": (int, Bound(1, 10**6), False),
    "target_policy_noise": (float, Bound(0, 100), False),
    "target_noise_clip": (float, Bound(0, 100), False),
}
_BOOL_KWARGS = {"normalize_advantage", "use_sde", "use_rms_prop", "ortho_init", "full_std",
                "use_expln", "squash_output", "share_features_extractor", "normalize_images"}
_RESERVED_KWARGS = {"policy", "env", "seed", "verbose", "tensorboard_log", "device",
                    "_init_setup_model"}
"""Given by rlhf itself (the config's ``agent.policy``, ``seed``, ...)."""
_RESERVED_POLICY_KWARGS = {"observation_space", "action_space", "lr_schedule"}
"""Given by SB3 itself."""


def _kwarg_number(value: object, key: str, kind: type, bound: Bound) -> int | float:
    """``value`` as a number of ``kind`` in ``bound``; an integral float is an int here, as
    in the typed config (YAML reads 2e3 as a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        value = int(value)
    bound.check(value, key)
    return float(value) if kind is float else value


def _check_finite(value: object, key: str) -> None:
    """No NaN or infinity anywhere in settings this module does not know (e.g.
    ``optimizer_kwargs``): none of SB3's or torch's settings means anything by them."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")


def _unknown(key: str, name: str, known: list[str], what: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{key}: {what} takes no such setting{hint}")


def _accepts(cls: type) -> tuple[list[str], bool]:
    """The keyword names ``cls(...)`` takes, and whether it takes any (``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters
    names = [n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD]
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())


def _net_arch(value: object, key: str) -> object:
    """A policy's ``net_arch``: a list of widths, or ``{pi: [...], vf: [...]}``, each at
    most ``MAX_LAYERS`` layers of widths in ``WIDTH`` (the reward model's limits)."""
    if isinstance(value, dict):
        for k in value:
            if k not in ("pi", "vf", "qf"):
                raise ConfigError(f"{key}.{k}: net_arch has only 'pi', 'vf' (on-policy) and "
                                  "'qf' (off-policy) lists")
        return {k: _net_arch(v, f"{key}.{k}") for k, v in value.items()}
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of layer widths or {{pi: [...], vf: "
                          f"[...]}}, got {value!r}")
    if len(value) > MAX_LAYERS:
        raise ConfigError(f"{key}: at most {MAX_LAYERS} layers, got {len(value)}")
    return [_kwarg_number(w, f"{key}[{i}]", int, WIDTH) for i, w in enumerate(value)]


def _check_name(cls: type, name: str, key: str, reserved: set[str], setter: str,
                owner: str) -> None:
    """A keyword ``cls`` takes and that nobody else sets, or a ConfigError naming ``key``."""
    if name in reserved:
        raise ConfigError(f"{key}: set by {setter}, not here")
    names, any_name = _accepts(cls)
    if name not in names and not any_name:
        raise _unknown(key, str(name), names, owner)


def checked_kwargs(algo: str, algo_cls: type, policy_class: type, kwargs: dict,
                   n_envs: int) -> dict:
    """``agent.kwargs`` checked where they can be before SB3 sees them: names it takes,
    numbers in range (a copy, integral floats made ints); ConfigError names the key."""
    out = {}
    for name, value in kwargs.items():
        key = f"agent.kwargs.{name}"
        _check_name(algo_cls, name, key, _RESERVED_KWARGS, "rlhf (agent.policy, seed, ...)", algo)
        if name == "ent_coef" and isinstance(value, str) and value.startswith("auto"):
            pass  # SAC's learned entropy coefficient ('auto' or 'auto_0.1')
        elif name == "train_freq" and isinstance(value, list):
            value = tuple(value)  # SB3's (n, 'step' | 'episode'); SB3 checks the unit
        elif name in _KWARG_RANGES:
            kind, bound, optional = _KWARG_RANGES[name]
            if not (optional and value is None):
                value = _kwarg_number(value, key, kind, bound)
        elif name in _BOOL_KWARGS and not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        elif name == "policy_kwargs" and value is not None:
            value = _checked_policy_kwargs(policy_class, value, key)
        else:
            _check_finite(value, key)
        out[name] = value
    params = inspect.signature(algo_cls).parameters
    n_steps = out.get("n_steps", params["n_steps"].default if "n_steps" in params else 1)
    if n_steps * n_envs > MAX_ROLLOUT:
        raise ConfigError(f"agent.kwargs.n_steps: n_steps * env.n_envs = {n_steps * n_envs:_} "
                          f"transitions per rollout; at most {MAX_ROLLOUT:_}")
    return out


def _checked_policy_kwargs(policy_class: type, pk: object, key: str) -> dict:
    if not isinstance(pk, dict):
        raise ConfigError(f"{key}: expected a mapping, got {pk!r}")
    out = {}
    for name, value in pk.items():
        sub = f"{key}.{name}"
        _check_name(policy_class, name, sub, _RESERVED_POLICY_KWARGS, "SB3 itself",
                    policy_class.__name__)
        if name == "net_arch" and value is not None:
            value = _net_arch(value, sub)
        elif name == "log_std_init":
            value = _kwarg_number(value, sub, float, Bound(-20, 20, cap=False))
        elif name in _BOOL_KWARGS and not isinstance(value, bool):
            raise ConfigError(f"{sub}: expected true or false, got {value!r}")
        elif (name == "features_extractor_kwargs" and isinstance(value, dict)
              and "features_dim" in value):
            value = {**value, "features_dim": _kwarg_number(
                value["features_dim"], f"{sub}.features_dim", int, WIDTH)}
            _check_finite(value, sub)
        else:
            _check_finite(value, sub)
        out[name] = value
    return out
