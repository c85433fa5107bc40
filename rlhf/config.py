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
    algo: str = "PPO"
    """PPO, A2C (on-policy), SAC, TD3 (off-policy: the replay buffer is relabelled at each
    reward-model fit), or any SB3 algorithm class as ``module:Class``."""
    policy: str = "MlpPolicy"
    normalize_obs: bool = False
    """VecNormalize on observations, for the policy only (the reward model sees raw ones)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the SB3 algorithm (n_steps, learning_rate, policy_kwargs, ...)."""
    pretrain_steps: int = 0
    """Off-policy agents: steps of unsupervised pre-training (PEBBLE) before the first
    queries, maximising a k-nearest-neighbour state-entropy bonus instead of any reward, so
    the first clips show varied behaviour. Counted in ``loop.total_timesteps``; replaces
    ``loop.initial_timesteps`` of untrained behaviour when > 0."""
    relabel_buffer: bool = True
    """Off-policy agents: relabel the whole replay buffer with each newly fitted reward model
    (PEBBLE); false keeps each transition's reward as it was stored (an ablation)."""
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
        text = _read_config_text(path)
        try:
            loaded = _load_yaml(text, str(path))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {_one_line(str(e))}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
        data = loaded
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.path=value, e.g. reward.ensemble=5")
        _set_dotted(data, key.strip(), _parse_value(raw, key.strip()))
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


MAX_CONFIG_BYTES = 1 << 20
"""A config file is a few kB; one over 1 MiB is not a config (or was generated by mistake)."""
MAX_YAML_NODES = 100_000
"""Values a YAML document may hold once its aliases are expanded. Aliases stay allowed (they
are handy, e.g. one ``net_arch`` for pi and vf), but each use counts as a copy of what it
names, so nested aliases (a "billion laughs" file) cannot expand into gigabytes of config;
a 1 MiB file without aliases holds fewer values than this, so only alias bombs hit it."""


def _read_config_text(path: Path) -> str:
    """A config file's text: a regular, readable, small, UTF-8 file, or one ConfigError line."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file "
                          "(e.g. configs/pendulum.yaml)")
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():  # a FIFO or device could block or never end
        raise ConfigError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # not stat(): its size can lie (e.g. /proc)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES // 2**20} MiB, too large to be a "
                          "config file")
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte-order mark is harmless
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (invalid byte {data[e.start]:#04x} at offset "
                          f"{e.start}); a config file must be UTF-8 text") from None


def _one_line(text: str) -> str:
    """PyYAML's multi-line messages (problem, then marks) as one line."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _load_yaml(text: str, where: str, prefix: str = "") -> Any:
    """YAML ``text`` as plain data, refusing duplicate keys and alias bombs (ConfigError
    naming ``where`` and the key path under ``prefix``); malformed YAML raises YAMLError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(loader, node, where, prefix)
        return loader.construct_document(node)
    except RecursionError:  # PyYAML composes and constructs recursively
        raise ConfigError(f"{where}: nested too deeply to be a config") from None
    except ConfigError:
        raise
    except ValueError as e:  # e.g. an integer of over 4300 digits (Python's own limit)
        raise ConfigError(f"{where}: {_one_line(str(e))}") from None
    finally:
        loader.dispose()


def _check_nodes(loader: _Loader, root: yaml.Node, where: str, prefix: str) -> None:
    """Walk the composed document as construction would (an alias once per use), without
    recursion: at most ``MAX_YAML_NODES`` values, and no key twice in a mapping (PyYAML
    would silently keep the last)."""
    count = 0
    stack: list[tuple[yaml.Node, str]] = [(root, prefix)]
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{where}: over {MAX_YAML_NODES:_} values once YAML aliases are "
                              "expanded; a config is far smaller (nested aliases?)")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys may repeat
                    stack.append((value_node, path))
                    continue
                name = "?"
                if isinstance(key_node, yaml.ScalarNode):
                    key = loader.construct_object(key_node)
                    name = str(key)
                    line = key_node.start_mark.line + 1
                    if key in first_line:
                        dotted = f"{path}.{name}" if path else name
                        raise ConfigError(f"{where}, line {line}: {dotted}: duplicate key "
                                          f"(also on line {first_line[key]}); each key may "
                                          "appear once")
                    first_line[key] = line
                stack.append((value_node, f"{path}.{name}" if path else name))


def _parse_value(raw: str, key: str = "") -> Any:
    """An override's value as YAML (duplicate keys and alias bombs refused); not YAML: the
    raw string."""
    try:
        shown = raw if len(raw) <= 60 else f"{raw[:57]}..."
        return _load_yaml(raw, f"override {key}={shown}", key)
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
        try:
            return float(value)
        except OverflowError:  # an int past float's range, e.g. 10**400
            raise ConfigError(f"{path}: a {len(str(value))}-digit number is too large") from None
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


def _fmt(x: float) -> str:
    """A number for a message: 10_000_000 (also valid YAML), 1e+30, 0.05, inf."""
    if isinstance(x, float) and math.isfinite(x) and x.is_integer() and abs(x) < 1e16:
        x = int(x)
    if isinstance(x, int):
        if abs(x) >= 10**300:  # past a float's range: '.3g' would raise OverflowError
            return f"a {len(str(abs(x)))}-digit number"
        return f"{x:.3g}" if abs(x) >= 10**12 else f"{x:_}" if abs(x) >= 10_000 else str(x)
    return repr(x)


@dataclass(frozen=True)
class Bound:
    """The sane range of a numeric value; every comparison fails for NaN, so NaN never passes.

    ``cap``: the upper end is a sanity limit (far past real use, short of exhausting memory
    or time), not part of the value's meaning: the message gives it apart, after the lower
    end, which is what most mistakes hit. Otherwise the message gives the interval.
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    why: str = ""
    cap: bool = True

    def contains(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def describe(self) -> str:
        if self.cap:
            text = f"must be {'>' if self.low_open else '>='} {_fmt(self.low)}"
            if not math.isinf(self.high):
                text += f" and {'<' if self.high_open else '<='} {_fmt(self.high)}"
        else:
            text = (f"must be in {'(' if self.low_open else '['}{_fmt(self.low)}, "
                    f"{_fmt(self.high)}{')' if self.high_open else ']'}")
        return f"{text} ({self.why})" if self.why else text

    def check(self, value: float, key: str) -> None:
        _check(self.contains(value), key, f"{self.describe()}, got {_fmt(value)}")


def _fraction(low_open: bool = False, high_open: bool = False, why: str = "") -> Bound:
    return Bound(0, 1, low_open, high_open, why, cap=False)


WIDTH = Bound(1, 8192, why="units in a layer")
"""A hidden layer's width, for the reward model and (``rlhf.agent``) the policy."""
MAX_LAYERS = 16
SEED_MAX = 2**32 - 1
"""numpy's legacy seeding (which SB3 uses) refuses larger seeds."""

BOUNDS: dict[str, Bound] = {
    "seed": Bound(0, SEED_MAX),
    "env.n_envs": Bound(1, 1024, why="envs stepped in turn in one process"),
    "agent.pretrain_steps": Bound(0, 10**10),
    "env.max_episode_steps": Bound(1, 10**9),
    "env.frame_fraction": _fraction(low_open=True,
                                    why="share of clips recorded for a person to see"),
    "env.frame_size": Bound(16, 4096, why="pixels on a frame's long side"),
    "env.frame_memory_mb": Bound(0, 2**20, low_open=True, why="megabytes; 2**20 is 1 TiB"),
    "reward.ensemble": Bound(1, 64, why="members, each a network trained in step"),
    "reward.hidden": WIDTH,
    "reward.lr": Bound(0, 1, low_open=True, why="Adam's step size"),
    # The trainer adapts weight decay within [1e-6, 1]; a larger start would only be cut.
    "reward.weight_decay": Bound(0, 1),
    "reward.batch_size": Bound(1, 10**6, why="pairs per member per step"),
    "reward.epochs": Bound(1, 10_000),
    "reward.min_steps": Bound(0, 10**6),
    "reward.val_fraction": _fraction(high_open=True),
    "reward.random_answer_prob": _fraction(high_open=True),
    # The normalised reward has unit variance: a clip past 1e6 never clips; 0 disables.
    "reward.clip_reward": Bound(0, 1e6, why="0 disables"),
    "reward.threads": Bound(0, 1024, why="0 = torch's default"),
    "teacher.beta": Bound(0, math.inf, low_open=True, why="inf = perfectly rational"),
    "teacher.gamma": _fraction(low_open=True),
    "teacher.mistake": _fraction(),
    # Returns (or, relative, fractions of the mean return): finite, and past 1e12 no env's
    # clip returns are on the scale of the threshold.
    "teacher.skip_threshold": Bound(-1e12, 1e12),
    "teacher.equal_threshold": Bound(0, 1e12),
    "teacher.min_new_labels": Bound(1, 10**6),
    "query.candidates": Bound(1, 10_000, why="candidate pairs per query"),
    "query.pool_size": Bound(2, 10**6, why="clips kept in memory"),
    "loop.total_timesteps": Bound(1, 10**10),
    "loop.total_labels": Bound(1, 10**6),
    "loop.initial_label_fraction": _fraction(low_open=True),
    "loop.initial_timesteps": Bound(1, 10**10),
    "loop.clip_length": Bound(1, 10_000, why="steps per clip"),
    "loop.iterations": Bound(1, 100_000),
    "loop.schedule_decay": Bound(0, 1e6),
    "eval.episodes": Bound(1, 10_000),
    "eval.every": Bound(0, 100_000, why="iterations; 0 = only at the end"),
    "viewer.width": Bound(640, 16384, why="window pixels"),
    "viewer.height": Bound(400, 16384, why="window pixels"),
    "viewer.fps": Bound(0, 1000, low_open=True, why="or null for the env's render_fps"),
    "viewer.speed": Bound(0.05, 16, cap=False),
    "viewer.loop_pause_frames": Bound(0, 10_000),
    "viewer.prefetch": Bound(1, 64, why="pairs rendered ahead"),
    "viewer.claim_seconds": Bound(5, 86_400, why="viewers renew claims every third of it"),
    "viewer.poll_seconds": Bound(0, 3600, low_open=True),
}
"""Every numeric config value's range, by dotted path (a list's bound is its items'): a
field missing here fails every ``validate``, so a new one cannot go unbounded."""
LENGTHS: dict[str, tuple[int, int]] = {"reward.hidden": (1, MAX_LAYERS)}
"""Lengths of numeric list values; a list missing here may have any length."""


def _numeric_kind(tp: Any) -> str | None:
    """'number' for int / float (optional or not), 'list' for a list of them, else None."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            return None
        tp = args[0]
    if tp in (int, float):
        return "number"
    if get_origin(tp) is list and get_args(tp)[0] in (int, float):
        return "list"
    return None


def numeric_fields(cls: type | None = None, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, 'number' or 'list') for every numeric field under config class ``cls``
    (default: Config)."""
    cls = Config if cls is None else cls
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            found += numeric_fields(hints[f.name], path)
        elif (kind := _numeric_kind(hints[f.name])) is not None:
            found.append((path, kind))
    return found


def _lookup(cfg: Config, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _check_numbers(cfg: Config) -> None:
    for path, kind in numeric_fields():
        if path not in BOUNDS:  # a programming error, not the user's: fail loudly
            raise TypeError(f"config field {path} has no range in rlhf.config.BOUNDS")
        value = _lookup(cfg, path)
        if value is None:
            continue
        if kind == "number":
            BOUNDS[path].check(value, path)
            continue
        low, high = LENGTHS.get(path, (0, math.inf))
        _check(low <= len(value) <= high, path,
               f"must have {low} to {high} items, got {len(value)}: {value}")
        for i, item in enumerate(value):
            BOUNDS[path].check(item, f"{path}[{i}]")


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express. Raises ConfigError naming the key."""
    _check(cfg.env.id.strip() != "", "env.id", "must name a gymnasium id or module:Class")
    _check(cfg.agent.algo.strip() != "", "agent.algo",
           "must name an SB3 algorithm (PPO, A2C, SAC, TD3) or module:Class")
    _check_numbers(cfg)
    _check(cfg.agent.pretrain_steps < cfg.loop.total_timesteps, "agent.pretrain_steps",
           f"{cfg.agent.pretrain_steps} leaves none of loop.total_timesteps "
           f"({cfg.loop.total_timesteps}) for learning from preferences")
    r = cfg.reward
    _check(r.device == "auto" or r.device == "cpu" or r.device.startswith("cuda"), "reward.device",
           f"must be 'auto', 'cpu' or 'cuda[:N]', got {r.device!r}")
    t = cfg.teacher
    _check(t.score is None or ":" in t.score, "teacher.score",
           f"must be 'module:function', got {t.score!r}")


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from rlhf.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
