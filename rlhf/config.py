"""Typed run configuration: defaults in code, YAML presets override them, the CLI overrides both.

>>> cfg = load_config(overrides=["reward.ensemble=5", "seed=3"])
>>> cfg.reward.ensemble, cfg.seed
(5, 3)

Every error names the offending key's dotted path, e.g. ``reward.ensembel: unknown key
(did you mean 'ensemble'?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A user error in a config file or override; the message names the key and the fix."""


@dataclass
class EnvConfig:
    id: str = "Pendulum-v1"
    """A registered gymnasium id, or an entry point ``module.path:ClassName`` / ``module:Id-v0``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to ``gymnasium.make`` (or the class)."""
    imports: list[str] = field(default_factory=list)
    """Extra modules to import before making the env (they register the user's envs)."""
    n_envs: int = 4
    """Parallel environments in the agent's VecEnv."""
    max_episode_steps: int | None = None
    """Override the env's time limit (fixed-horizon episodes keep length from leaking reward)."""
    frame_fraction: float = 0.1
    """Envs without restorable state, labelled by a person: share of clips whose frames are
    recorded during rollouts (each env decides at the start of each clip). Only recorded
    clips can be shown, so only they become query candidates; rendering costs a frame per
    recorded step. Envs with restorable state never record (their clips are replayed)."""
    frame_size: int = 128
    """Recorded frames are downscaled (area average) to at most this many pixels on their
    long side: a 25-step clip of 128x128 RGB frames is 1.2 MB."""
    frame_memory_mb: float = 512.0
    """Recorded frames kept in memory for query candidates: the candidate pool holds at most
    this many megabytes of frames (fewer clips than ``query.pool_size`` if need be)."""


@dataclass
class AgentConfig:
    algo: Literal["PPO", "A2C"] = "PPO"
    """Any on-policy SB3 algorithm by name."""
    policy: str = "MlpPolicy"
    normalize_obs: bool = False
    """VecNormalize on observations, for the policy only (the reward model sees raw ones)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the SB3 algorithm (n_steps, learning_rate, policy_kwargs, ...)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """``linear``: the learning rate falls from ``kwargs.learning_rate`` to 0 over the whole
    run's ``loop.total_timesteps`` (RL Zoo's ``lin_`` schedules), across the loop's many
    ``learn()`` calls; the final policy then changes little in its last iterations."""


@dataclass
class RewardConfig:
    ensemble: int = 3
    """Ensemble members; each has its own initialisation and bootstrap of the labels."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    use_action: bool = True
    use_next_obs: bool = False
    lr: float = 1e-3
    weight_decay: float = 1e-4
    """Initial L2 coefficient; adapted so validation loss stays near 1.1-1.5x training loss."""
    adapt_weight_decay: bool = True
    batch_size: int = 64
    """Pairs per member per gradient step."""
    epochs: int = 10
    """Passes over the labels at each fit (gradient steps = epochs * labels / batch_size)."""
    min_steps: int = 50
    """At least this many gradient steps per fit (few labels early on)."""
    val_fraction: float = 0.2
    random_answer_prob: float = 0.1
    """Probability of a uniformly random answer in the preference model (Christiano: 10%)."""
    bootstrap: bool = True
    normalize: bool = True
    """Rescale the ensemble-mean reward to zero mean, unit variance over recent rollouts."""
    clip_reward: float = 10.0
    """Clip the normalised reward to [-clip_reward, clip_reward]; 0 disables."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """'auto' = bf16 autocast on CUDA and on CPUs that multiply bf16 natively (AVX512-BF16,
    AMX), float32 elsewhere; master weights and the loss stay float32."""
    compile: bool = False
    """torch.compile the ensemble forward."""
    threads: int = 0
    """torch CPU threads for the reward model; 0 = leave torch's default."""
    relabel: Literal["auto", "step", "rollout"] = "auto"
    """When the agent's learned reward is computed: 'step' = every vector step, all envs in
    one call; 'rollout' = the whole rollout in one call when it ends (one transfer each way
    per rollout); 'auto' = 'rollout' when the reward model is on a GPU, else 'step'."""


@dataclass
class TeacherConfig:
    kind: Literal["oracle", "irrational", "human"] = "oracle"
    beta: float = math.inf
    """Boltzmann rationality: P(prefer a) = sigmoid(beta * (R_a - R_b)); inf = deterministic."""
    gamma: float = 1.0
    """Myopic discount: step t of a clip of length T weighs gamma ** (T - 1 - t)."""
    mistake: float = 0.0
    """Probability of flipping the answer."""
    skip_threshold: float | None = None
    """Skip a pair when neither clip's return exceeds this (None: never skip)."""
    equal_threshold: float = 0.0
    """Answer 'equal' when the returns differ by less than this."""
    relative_thresholds: bool = False
    """B-Pref's scaling: ``skip_threshold`` and ``equal_threshold`` are fractions of the
    mean clip return of the batch being asked (so they follow the agent as its returns
    grow), not absolute returns. B-Pref's 'equal' teacher: equal_threshold 0.1."""
    score: str | None = None
    """Scoring function ``module:function`` mapping a clip to per-step scores (T,);
    None = the env's own reward."""
    instructions: str = "Which clip shows the better behaviour?"
    """Task instructions shown to a person."""
    asynchronous: bool = True
    """Human teacher only: the agent keeps training on the current reward model while labels
    arrive (Christiano et al.); false = wait for every query of a batch before going on."""
    min_new_labels: int = 10
    """Human teacher, asynchronous: refit the reward model once this many new (non-skip)
    labels have landed; also the labels the agent waits for before it first trains."""


@dataclass
class QueryConfig:
    strategy: Literal["random", "disagreement", "entropy"] = "disagreement"
    candidates: int = 10
    """Candidate pairs considered per query selected (pool = candidates * n)."""
    pool_size: int = 2000
    """Most recent clips kept in memory to draw candidate pairs from."""


@dataclass
class LoopConfig:
    total_timesteps: int = 50_000
    total_labels: int = 200
    initial_label_fraction: float = 0.25
    """Share of the label budget asked up front about early (untrained-policy) behaviour."""
    initial_timesteps: int = 2_000
    """Env steps of the untrained policy collected for the initial queries."""
    clip_length: int = 25
    iterations: int = 10
    """Agent-train / query / fit rounds after the initial batch."""
    schedule_decay: float = 1.0
    """Hyperbolic label schedule: iteration i gets labels proportional to 1 / (1 + decay * i)."""


@dataclass
class ViewerConfig:
    """The labeling window (``rlhf label RUN_DIR``)."""

    width: int = 1280
    height: int = 720
    fps: float | None = None
    """Playback frames per second at 1x; None = the env's ``render_fps``."""
    speed: float = 1.0
    """Initial playback speed (+ and - change it)."""
    loop_pause_frames: int = 10
    """Frames the clips hold (highlighted) at the loop point before replaying."""
    require_full_view: bool = False
    """Ignore answers until both clips have played through once."""
    prefetch: int = 1
    """Pairs prepared (rendered) in the background ahead of the one on screen."""
    claim_seconds: float = 60.0
    """A viewer's claim on a query lasts this long without renewal (it renews while open);
    a crashed viewer's queries go back to the others after this."""
    poll_seconds: float = 1.0
    """How often to look for new queries while none is waiting."""


@dataclass
class EvalConfig:
    episodes: int = 10
    every: int = 1
    """Evaluate the policy on the true reward every this many iterations (0 = only at the end)."""
    deterministic: bool = True


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    run_dir: str | None = None
    """Default: runs/<name>-<seed>-<timestamp>."""
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- loading -----------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML file, then ``key.path=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.load(path.read_text(), Loader=_Loader)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
        data = loaded
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.path=value, e.g. reward.ensemble=5")
        _set_dotted(data, key.strip(), _parse_value(raw))
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg


class _Loader(yaml.SafeLoader):
    """YAML with ``3e-4`` read as a number: PyYAML follows YAML 1.1, which needs a dot
    (``3.0e-4``) and otherwise yields the string '3e-4', e.g. for a learning rate."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _parse_value(raw: str) -> Any:
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        return raw


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Recursively build dataclass ``cls`` from plain data, checking keys and types."""
    where = prefix or "config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{path}: unknown key{hint}; valid keys: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of "
                          f"{' | '.join(_type_name(a) for a in args)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "infinity"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported config type {tp!r}")  # pragma: no cover


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


# -- validation --------------------------------------------------------------------------


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express. Raises ConfigError naming the key."""
    _check(cfg.env.id.strip() != "", "env.id", "must name a gymnasium id or module:Class")
    _check(cfg.env.n_envs >= 1, "env.n_envs", f"must be >= 1, got {cfg.env.n_envs}")
    m = cfg.env.max_episode_steps
    _check(m is None or m >= 1, "env.max_episode_steps", f"must be >= 1, got {m}")
    f = cfg.env.frame_fraction
    _check(0 < f <= 1, "env.frame_fraction",
           f"must be in (0, 1] (share of clips recorded for a person to see), got {f}")
    _check(cfg.env.frame_size >= 16, "env.frame_size",
           f"must be >= 16 (pixels on a frame's long side), got {cfg.env.frame_size}")
    _check(cfg.env.frame_memory_mb > 0, "env.frame_memory_mb",
           f"must be > 0, got {cfg.env.frame_memory_mb}")
    r = cfg.reward
    _check(r.ensemble >= 1, "reward.ensemble", f"must be >= 1, got {r.ensemble}")
    _check(len(r.hidden) >= 1 and all(h >= 1 for h in r.hidden), "reward.hidden",
           f"must be a non-empty list of positive widths, got {r.hidden}")
    _check(r.lr > 0, "reward.lr", f"must be > 0, got {r.lr}")
    _check(r.weight_decay >= 0, "reward.weight_decay", f"must be >= 0, got {r.weight_decay}")
    _check(r.batch_size >= 1, "reward.batch_size", f"must be >= 1, got {r.batch_size}")
    _check(r.epochs >= 1, "reward.epochs", f"must be >= 1, got {r.epochs}")
    _check(r.min_steps >= 0, "reward.min_steps", f"must be >= 0, got {r.min_steps}")
    _check(0 <= r.val_fraction < 1, "reward.val_fraction",
           f"must be in [0, 1), got {r.val_fraction}")
    _check(0 <= r.random_answer_prob < 1, "reward.random_answer_prob",
           f"must be in [0, 1), got {r.random_answer_prob}")
    _check(r.clip_reward >= 0, "reward.clip_reward", f"must be >= 0, got {r.clip_reward}")
    _check(r.device == "auto" or r.device == "cpu" or r.device.startswith("cuda"), "reward.device",
           f"must be 'auto', 'cpu' or 'cuda[:N]', got {r.device!r}")
    _check(r.threads >= 0, "reward.threads", f"must be >= 0, got {r.threads}")
    t = cfg.teacher
    _check(t.beta > 0, "teacher.beta", f"must be > 0 (inf = perfectly rational), got {t.beta}")
    _check(0 < t.gamma <= 1, "teacher.gamma", f"must be in (0, 1], got {t.gamma}")
    _check(0 <= t.mistake <= 1, "teacher.mistake", f"must be in [0, 1], got {t.mistake}")
    _check(t.equal_threshold >= 0, "teacher.equal_threshold",
           f"must be >= 0, got {t.equal_threshold}")
    _check(t.score is None or ":" in t.score, "teacher.score",
           f"must be 'module:function', got {t.score!r}")
    _check(t.min_new_labels >= 1, "teacher.min_new_labels",
           f"must be >= 1, got {t.min_new_labels}")
    v = cfg.viewer
    _check(v.width >= 640 and v.height >= 400, "viewer.width",
           f"the window must be at least 640x400, got {v.width}x{v.height}")
    _check(v.fps is None or v.fps > 0, "viewer.fps", f"must be > 0 or null, got {v.fps}")
    _check(0.05 <= v.speed <= 16, "viewer.speed", f"must be in [0.05, 16], got {v.speed}")
    _check(v.loop_pause_frames >= 0, "viewer.loop_pause_frames",
           f"must be >= 0, got {v.loop_pause_frames}")
    _check(v.prefetch >= 1, "viewer.prefetch", f"must be >= 1, got {v.prefetch}")
    _check(v.claim_seconds >= 5, "viewer.claim_seconds",
           f"must be >= 5 (viewers renew claims every third of it), got {v.claim_seconds}")
    _check(v.poll_seconds > 0, "viewer.poll_seconds", f"must be > 0, got {v.poll_seconds}")
    q = cfg.query
    _check(q.candidates >= 1, "query.candidates", f"must be >= 1, got {q.candidates}")
    _check(q.pool_size >= 2, "query.pool_size", f"must be >= 2, got {q.pool_size}")
    lp = cfg.loop
    _check(lp.total_timesteps > 0, "loop.total_timesteps",
           f"must be > 0, got {lp.total_timesteps}")
    _check(lp.total_labels > 0, "loop.total_labels", f"must be > 0, got {lp.total_labels}")
    _check(0 < lp.initial_label_fraction <= 1, "loop.initial_label_fraction",
           f"must be in (0, 1], got {lp.initial_label_fraction}")
    _check(lp.initial_timesteps > 0, "loop.initial_timesteps",
           f"must be > 0, got {lp.initial_timesteps}")
    _check(lp.clip_length >= 1, "loop.clip_length", f"must be >= 1, got {lp.clip_length}")
    _check(lp.iterations >= 1, "loop.iterations", f"must be >= 1, got {lp.iterations}")
    _check(lp.schedule_decay >= 0, "loop.schedule_decay",
           f"must be >= 0, got {lp.schedule_decay}")
    _check(cfg.eval.episodes >= 1, "eval.episodes", f"must be >= 1, got {cfg.eval.episodes}")
    _check(cfg.eval.every >= 0, "eval.every", f"must be >= 0, got {cfg.eval.every}")


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from rlhf.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
