"""A tuning run (``rlhf tune``): ask, answer, update the GP, pick the next pair, until the
comparison budget is spent.

Everything a run knows lives in its store: every candidate's clips with their parameters,
every query, every answer (committed the moment it is given). The GP is rebuilt from the
store, so a stopped run resumes with no comparison lost and, from the same labels, picks
the same pairs: pair k's random stream is ``default_rng([seed, 7, k])`` and its rollouts
start from ``pair_starts`` (the same ``tune.starts`` start states for every pair, unless
``tune.same_starts`` is off).

    >>> result = tune(space, "rlhf_envs.tune_reach2d:controller", teacher="oracle",
    ...               env="rlhf_envs/Reach2D-v0", score="rlhf_envs.tune_reach2d:utility")
    ... # doctest: +SKIP
    >>> result.params, result.utility_mean                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.config import (
    Config,
    ConfigError,
    EnvConfig,
    ParamConfig,
    TeacherConfig,
    TuneConfig,
    save_config,
)
from rlhf.config_bounds import validate
from rlhf.faults import failpoint
from rlhf.resume import record_components
from rlhf.rundir import (
    Interrupted,
    RunDir,
    RunDirError,
    reserve_store,
    sigterm_raises_interrupt,
)
from rlhf.seeds import TUNE_PAIRS
from rlhf.store import Store
from rlhf.teachers import ScoreFn, SimulatedTeacher, Teacher, load_score_fn, make_teacher
from rlhf.tune.behaviour import Behaviour, Rollouts, load_behaviour
from rlhf.tune.model import PreferenceGP, read_comparisons
from rlhf.tune.pairs import PairStrategy, make_pair_strategy
from rlhf.tune.result import Best, TuneStatus, write_best, write_plot

PAIR_STREAM = 7
"""``default_rng([seed, PAIR_STREAM, k])``: pair k's draws (the loop's own streams are 0-2)."""
TEACHER_STREAM = 1
WAIT_POLL = 0.05
"""Seconds between looks at the store while a person answers: the next pair follows an
answer by at most this much more."""


@dataclass(frozen=True)
class Step:
    """The recommendation after ``comparisons`` answers (one per pair asked, this session)."""

    comparisons: int
    params: dict[str, float | int]
    utility_mean: float
    utility_std: float
    latency: float | None
    """Seconds from the answer to the next pair in the store (None: the first pair of a
    session, which no answer preceded)."""
    fit_ahead: float = 0.0
    """Seconds spent, after the pair was stored, fitting the hyperparameters the next
    answer will need (while a person watches the pair)."""


@dataclass
class TuneResult:
    """What ``tune`` found: the recommended parameters (the seen candidate of highest
    posterior mean), the model's estimate of their utility (mean, std; the GP's own
    scale), the comparisons behind it, and the model itself."""

    params: dict[str, float | int]
    utility_mean: float
    utility_std: float
    comparisons: int
    run_dir: Path
    gp: PreferenceGP
    history: list[Step] = field(default_factory=list)
    """The recommendation after each answer, this session."""

    @property
    def latencies(self) -> list[float]:
        """Seconds from each answer to the next pair in the store (refit, acquisition and
        the two rollouts), this session."""
        return [s.latency for s in self.history if s.latency is not None]


def tune(space: Sequence[ParamConfig] | dict[str, tuple[float, float]],
         behaviour: str | Behaviour, teacher: str | Teacher = "oracle", *,
         env: str | EnvConfig = "rlhf_envs/Reach2D-v0", score: str | ScoreFn | None = None,
         comparisons: int = 30, strategy: str = "eubo", seed: int = 0,
         run_dir: str | Path | None = None, force: bool = False,
         log: Callable[[str], None] = print, **tune_settings: Any) -> TuneResult:
    """Tune ``space`` from pairwise choices; the Python face of ``rlhf tune``.

    Args:
        space: ``ParamConfig`` records, or ``{name: (low, high)}``.
        behaviour: ``params -> policy`` (a callable or ``module:attr``).
        teacher: a teacher kind ('oracle', 'irrational', 'human') or a ``Teacher``.
        env: the env id (or an ``EnvConfig``) the behaviours act in.
        score: the simulated teacher's hidden utility, per step of a clip (``module:attr``
            or a callable); None: the env's own reward.
        tune_settings: further ``TuneConfig`` fields (candidates, fit_every, ...).
    """
    params = [p if isinstance(p, ParamConfig) else ParamConfig(name, float(p[0]), float(p[1]))
              for name, p in (space.items() if isinstance(space, dict)
                              else ((p.name, p) for p in space))]
    cfg = Config(name="tune", seed=seed, run_dir=None if run_dir is None else str(run_dir),
                 env=env if isinstance(env, EnvConfig) else EnvConfig(id=env),
                 teacher=TeacherConfig(kind=teacher if isinstance(teacher, str) else "oracle",
                                       score=score if isinstance(score, str) else None),
                 tune=TuneConfig(params=params, behaviour=behaviour if isinstance(
                     behaviour, str) else f"{behaviour.__module__}:{behaviour.__qualname__}",
                     comparisons=comparisons, strategy=strategy, **tune_settings))
    validate(cfg)
    return run_tune(cfg, force=force, log=log,
                    teacher=None if isinstance(teacher, str) else teacher,
                    behaviour=None if isinstance(behaviour, str) else behaviour,
                    score=None if score is None or isinstance(score, str) else score)


def pair_starts(seed: int, tune_cfg: TuneConfig, k: int) -> list[int]:
    """Reset seeds (``tune.starts``) that both behaviours of pair ``k`` play from, in order:
    ``seed + TUNE_PAIRS + j`` for ``j < starts``, the same for every pair; or, without
    ``same_starts``, pair k's own block of them."""
    first = seed + TUNE_PAIRS + (0 if tune_cfg.same_starts else k * tune_cfg.starts)
    return list(range(first, first + tune_cfg.starts))


@dataclass
class Parts:
    """A tuning run's components, resolved before its directory is made: a config naming
    something that cannot be imported or built fails with nothing written."""

    teacher: Teacher
    behaviour: Behaviour
    strategy: PairStrategy
    rollouts: Rollouts

    @classmethod
    def build(cls, cfg: Config, teacher: Teacher | None = None,
              behaviour: Behaviour | None = None, score: ScoreFn | None = None,
              strategy: PairStrategy | None = None) -> Parts:
        assert cfg.tune is not None
        behaviour = behaviour or load_behaviour(cfg.tune.behaviour)
        strategy = strategy or make_pair_strategy(cfg.tune.strategy)
        teacher = teacher or make_teacher(
            cfg.teacher, np.random.default_rng([cfg.seed, TEACHER_STREAM]),
            score or load_score_fn(cfg.teacher.score))
        # A person needs something to look at: frames where the env's state cannot be
        # restored for the viewer to render.
        rollouts = Rollouts(cfg.env, behaviour, cfg.tune.episode_steps,
                            frames=not teacher.synchronous)
        # One behaviour (the middle of the space) tried now: a policy that raises or gives
        # actions the env refuses fails in one line before the run directory exists.
        from rlhf.tune.space import Space

        space = Space(cfg.tune.params)
        try:
            rollouts.clip(space.as_dict(space.from_unit(np.full((1, space.dim), 0.5))[0]),
                          pair_starts(cfg.seed, cfg.tune, 0)[0])
        except BaseException:
            rollouts.close()
            raise
        return cls(teacher, behaviour, strategy, rollouts)


class Tuner:
    """One tuning run's pieces wired together; ``run_tune(cfg)`` is the usual entry."""

    def __init__(self, cfg: Config, run: RunDir, store: Store, parts: Parts,
                 log: Callable[[str], None] = print):
        from rlhf.tune.space import Space

        assert cfg.tune is not None
        self.cfg, self.run, self.store, self.log = cfg, run, store, log
        self.tune_cfg = cfg.tune
        self.space = Space(cfg.tune.params)
        self.teacher, self.strategy, self.rollouts = parts.teacher, parts.strategy, \
            parts.rollouts
        self.gp = PreferenceGP(cfg.tune.fit_every, seed=cfg.seed)
        self.history: list[Step] = []

    # -- one step --------------------------------------------------------------------------

    def ask_next(self, k: int) -> None:
        """Pick pair ``k`` from the labels so far, roll both behaviours out from pair k's
        start, and store the clips, their parameters and the query (one transaction each)."""
        rng = np.random.default_rng([self.cfg.seed, PAIR_STREAM, k])
        ua, ub = self.strategy(self.gp, self.space, rng, self.tune_cfg.candidates)
        # In a fixed order: an optimiser's two ends of a symmetric pair may come either way
        # round (the viewer picks the sides at random anyway).
        if tuple(ub) < tuple(ua):
            ua, ub = ub, ua
        xs = self.space.from_unit(np.stack([ua, ub]))
        params = [self.space.as_dict(x) for x in xs]
        starts = pair_starts(self.cfg.seed, self.tune_cfg, k)
        clips = [self.rollouts.episodes(p, starts) for p in params]
        stored = self.store.add_candidate_clips(clips, params)
        assert stored[0].id is not None and stored[1].id is not None
        failpoint("ask")  # candidates stored, their query not yet: a resume asks it again
        self.store.add_queries([(stored[0].id, stored[1].id)], iteration=k)

    def answer_pending(self) -> None:
        """A simulated teacher answers what is pending (each query with its own stream, so a
        resumed run answers as an uninterrupted one would)."""
        for q in self.store.pending_queries():
            if isinstance(self.teacher, SimulatedTeacher):
                self.teacher.rng = np.random.default_rng([self.cfg.seed, TEACHER_STREAM,
                                                          q.iteration])
            clips = {c.id: c for c in self.store.get_clips([q.clip_a, q.clip_b])}
            self.teacher.ask(self.store, [q], clips)

    def refresh(self) -> None:
        self.gp.update(read_comparisons(self.store, self.space))

    def best(self) -> Best | None:
        i = self.gp.incumbent()
        if i is None or self.gp.data is None:
            return None
        point = self.gp.data.points[i]
        mean, std = self.gp.utility(point[None])
        return Best(params=self.space.as_dict(self.space.from_unit(point[None])[0]),
                    utility_mean=float(mean[0]), utility_std=float(std[0]),
                    comparisons=self.gp.data.m, ties=self.gp.data.ties,
                    skips=self.gp.data.skips)

    def report(self, finished: bool) -> Best | None:
        """best.json and status.json, atomically; the plot at the end."""
        best = self.best()
        counts = self.store.counts()
        lat = np.array([s.latency for s in self.history if s.latency is not None])
        status = TuneStatus(
            comparisons=counts.labels, total_comparisons=self.tune_cfg.comparisons,
            pending=counts.pending, ties=0 if best is None else best.ties,
            skipped=counts.skipped, best=None if best is None else best.params,
            utility_mean=None if best is None else best.utility_mean,
            utility_std=None if best is None else best.utility_std,
            latency_median=float(np.median(lat)) if len(lat) else None,
            latency_p95=float(np.percentile(lat, 95)) if len(lat) else None,
            finished=finished)
        self.run.write_status(asdict(status))
        if best is not None:
            write_best(self.run, best)
            if finished:
                write_plot(self.run, self.gp, self.space, best)
        return best

    # -- the loop --------------------------------------------------------------------------

    def loop(self) -> TuneResult:
        budget = self.tune_cfg.comparisons
        answered_at: float | None = None
        while True:
            counts = self.store.counts()
            if counts.pending:
                if self.teacher.synchronous:
                    self.answer_pending()
                else:
                    self.wait_for_answer()
                answered_at = time.perf_counter()
                continue
            if counts.queries >= budget:
                break
            self.refresh()
            self.ask_next(counts.queries)
            latency = None if answered_at is None else time.perf_counter() - answered_at
            best = self.report(finished=False)
            # While the pair is watched: the hyperparameters the next answer will need.
            t0 = time.perf_counter()
            if self.gp.data is not None:
                self.gp.prepare(self.gp.data, self.gp.data.m + 1)
            if best is not None:
                self.history.append(Step(counts.labels, best.params, best.utility_mean,
                                         best.utility_std, latency,
                                         time.perf_counter() - t0))
        self.refresh()
        best = self.report(finished=True)
        if best is None:
            raise RunDirError(f"{self.run.path}: no comparison was answered (all skipped), "
                              "so there is nothing to recommend; resume with more: rlhf tune "
                              f"--resume {self.run.path} tune.comparisons=N")
        counts = self.store.counts()
        self.history.append(Step(counts.labels, best.params, best.utility_mean,
                                 best.utility_std, None))
        return TuneResult(best.params, best.utility_mean, best.utility_std, best.comparisons,
                          self.run.path, self.gp, self.history)

    def wait_for_answer(self) -> None:
        shown = False
        while self.store.counts().pending:
            if not shown:
                self.log(f"rlhf: waiting for an answer in the viewer (rlhf label "
                         f"{self.run.path})")
                shown = True
            time.sleep(WAIT_POLL)


def run_tune(cfg: Config, *, force: bool = False, resume: bool = False,
             teacher: Teacher | None = None, behaviour: Behaviour | None = None,
             score: ScoreFn | None = None, strategy: PairStrategy | None = None,
             log: Callable[[str], None] = print) -> TuneResult:
    """Start (or, with ``resume``, continue) the tuning run ``cfg`` describes. Ctrl-C or
    SIGTERM stops it with every answer kept and raises ``Interrupted``."""
    if cfg.tune is None:
        raise ConfigError("tune: this config has no tune section (params, behaviour): it is "
                          "an RL config; use rlhf train, or add a tune section")
    record_components(cfg, {"teacher": teacher, "behaviour": behaviour, "score": score,
                            "strategy": strategy}, resume, entry="run_tune",
                      command="rlhf tune")
    parts = Parts.build(cfg, teacher, behaviour, score, strategy)
    try:
        if resume:
            run = RunDir.open(cfg.run_dir or "")
            lock = run.lock()
            run.check_store()
        else:
            reserve_store(cfg)  # a server's store: before anything is written here
            run, lock = RunDir.create(cfg, force=force, say=log)
        log(f"rlhf: run directory {run.path}")
        previous_sigterm = sigterm_raises_interrupt()
        try:
            if resume:
                save_config(cfg, run.config)  # the overrides it resumed with, for the next
            location = run.store_location(cfg)
            with Store(location, create=not resume and isinstance(location, Path)) as store:
                return Tuner(cfg, run, store, parts, log).loop()
        except KeyboardInterrupt:
            raise Interrupted(run.path, checkpointed=False, command="rlhf tune") from None
        finally:
            with contextlib.suppress(ValueError):  # ValueError: not the main thread
                signal.signal(signal.SIGTERM, previous_sigterm)
            lock.release()
    finally:
        parts.rollouts.close()


def resume_tune_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config of the tuning run in ``run_dir``, for ``run_tune(resume=True)``."""
    from rlhf.resume import TUNE_RESUME_OVERRIDABLE, resume_config

    cfg = resume_config(run_dir, overrides, TUNE_RESUME_OVERRIDABLE, command="rlhf tune")
    if cfg.tune is None:
        raise ConfigError(f"{run_dir}: an RL run, not a tuning run; resume it with "
                          f"rlhf train --resume {run_dir}")
    return cfg
