"""Config validation: every numeric field's sane range (``BOUNDS``, ``LENGTHS``) and
``validate``. ``rlhf.config`` imports and re-exports these; to keep the imports one-way this
module takes ``ConfigError`` from ``rlhf.errors`` and imports ``Config`` only when
``numeric_fields`` needs its default (and for type checkers).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from rlhf.errors import ConfigError

if TYPE_CHECKING:
    from rlhf.config import Config


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
    "reward.robust_trust_prob": Bound(0, 1, low_open=True, high_open=True),
    "reward.robust_slack": Bound(0, 100, why="multiples of the cross-entropy's std"),
    "reward.robust_slack_fits": Bound(1, 10**6),
    "reward.robust_flip_prob": Bound(0, 1, low_open=True, high_open=True),
    "reward.crop_steps": Bound(0, 10**6, why="steps a training window may be shorter"),
    "reward.pseudo_ratio": Bound(0, 100, why="unlabelled pairs per labelled pair; 0 = off"),
    "reward.pseudo_threshold": Bound(0.5, 1, high_open=True),
    "reward.pseudo_clips": Bound(2, 100_000),
    "query.recent_clips": Bound(0, 10**7, why="newest clips candidates come from; 0 = all"),
    "store.retry_seconds": Bound(0, 10**6, why="seconds the trainer waits for its server"),
    "query.overlap": Bound(1, 1000, why="annotators asked each pair"),
    "query.repeat_fraction": _fraction(high_open=True, why="share of each batch asked again"),
    "teacher.beta": Bound(0, math.inf, low_open=True, why="inf = perfectly rational"),
    "teacher.gamma": _fraction(low_open=True),
    "teacher.mistake": _fraction(),
    "teacher.crowd_mistakes": _fraction(),
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
    "tune.comparisons": Bound(1, 100_000),
    "tune.candidates": Bound(2, 10**6, why="points scored per pair"),
    "tune.fit_every": Bound(1, 100_000, why="comparisons between hyperparameter fits"),
    "tune.episode_steps": Bound(1, 10**6),
    "tune.starts": Bound(1, 16, why="episodes per side of a pair, each watched every pair"),
}
"""Every numeric config value's range, by dotted path (a list's bound is its items'): a
field missing here fails every ``validate``, so a new one cannot go unbounded."""
LENGTHS: dict[str, tuple[int, int]] = {"reward.hidden": (1, MAX_LAYERS),
                                       "reward.robust_slack": (2, 2),
                                       "teacher.crowd_mistakes": (1, 100)}
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


def _section(tp: Any) -> type | None:
    """The config class of a section field (``X`` or an optional ``X | None``), else None."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def numeric_fields(cls: type | None = None, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, 'number' or 'list') for every numeric field under config class ``cls``
    (default: Config)."""
    if cls is None:
        from rlhf.config import Config  # rlhf.config imports this module

        cls = Config
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        if (section := _section(hints[f.name])) is not None:
            found += numeric_fields(section, path)
        elif (kind := _numeric_kind(hints[f.name])) is not None:
            found.append((path, kind))
    return found


def _lookup(cfg: Config, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
        if value is None:  # an optional section left out, or an optional value
            return None
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
    # Built-in names are known now; a module:attr is imported at run start.
    if ":" not in cfg.query.strategy:
        from rlhf.queries import make_strategy

        make_strategy(cfg.query.strategy)
    if ":" not in cfg.teacher.kind:
        from rlhf.registry import lookup
        from rlhf.teachers import TEACHERS

        lookup(cfg.teacher.kind, TEACHERS, "teacher.kind", "your own teacher factory")
    _check(cfg.agent.pretrain_steps < cfg.loop.total_timesteps, "agent.pretrain_steps",
           f"{cfg.agent.pretrain_steps} leaves none of loop.total_timesteps "
           f"({cfg.loop.total_timesteps}) for learning from preferences")
    r = cfg.reward
    _check(r.device == "auto" or r.device == "cpu" or r.device.startswith("cuda"), "reward.device",
           f"must be 'auto', 'cpu' or 'cuda[:N]', got {r.device!r}")
    _check(r.robust_slack[0] >= r.robust_slack[1], "reward.robust_slack",
           f"[first, last] must not grow (it tightens over the fits), got {r.robust_slack}")
    _check_store(cfg)
    if cfg.tune is not None:
        from rlhf.tune.space import validate_tune

        validate_tune(cfg.tune)
    t = cfg.teacher
    _check(t.score is None or ":" in t.score, "teacher.score",
           f"must be 'module:function', got {t.score!r}")
    _check_team(cfg)


def _check_team(cfg: Config) -> None:
    """``query.overlap`` asks each pair of that many different people: a simulated teacher
    must have them."""
    overlap, kind = cfg.query.overlap, cfg.teacher.kind
    if overlap == 1:
        return
    if kind in ("oracle", "irrational"):
        _check(False, "query.overlap", f"{overlap} asks each pair of {overlap} different "
               f"annotators, but teacher.kind={kind} is one: use teacher.kind=crowd (or "
               "human, for a team of people), or query.overlap=1")
    members = len(cfg.teacher.crowd_mistakes)
    _check(kind != "crowd" or overlap <= members, "query.overlap",
           f"{overlap} asks each pair of {overlap} different annotators, but the crowd has "
           f"{members} (teacher.crowd_mistakes); lower it or add members")


def _check_store(cfg: Config) -> None:
    from rlhf.store_pg import RUN_NAME, has_password, is_url, without_password

    url, run = cfg.store.url, cfg.store.run
    if url is not None:
        _check(is_url(url), "store.url",
               f"must be postgresql://USER@HOST:PORT/DATABASE (or unset, for SQLite in the run "
               f"directory), got {without_password(url)!r}")
        _check(not has_password(url), "store.url",
               "holds a password, which would be saved in the run's config.yaml; take it out "
               "of the URL and use PGPASSWORD or ~/.pgpass")
    if run is not None:
        _check(url is not None, "store.run", "names a run on a PostgreSQL server: set store.url")
        _check(bool(RUN_NAME.fullmatch(run)), "store.run",
               f"use 1-50 letters, digits, '_', '.' or '-', got {run!r}")
