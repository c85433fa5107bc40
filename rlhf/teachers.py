"""Teachers answer queries. Simulated ones compute answers from a score of each clip;
a person answers through the viewer. Both go through the store.

The simulated teacher follows B-Pref (Lee et al. 2021): each clip's return is
``sum_t gamma ** (T - 1 - t) * score_t`` (myopic when gamma < 1); a pair is skipped when
neither return exceeds ``skip_threshold``, called equal when the returns differ by less than
``equal_threshold``, otherwise clip a is preferred with probability
``sigmoid(beta * (R_a - R_b))`` (beta = inf: always the better one), and the answer is
flipped with probability ``mistake``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from rlhf.clips import Clip
from rlhf.config import ConfigError, TeacherConfig
from rlhf.faults import failpoint
from rlhf.registry import lookup, make
from rlhf.store import Query, Store
from rlhf.store_schema import AnsweredPair

ScoreFn = Callable[[Clip], np.ndarray]
"""Per-step scores (T,) of a clip; the sum is the clip's return for the teacher."""


def true_reward(clip: Clip) -> np.ndarray:
    """The env's own reward, the default score."""
    return clip.rewards


class Teacher(Protocol):
    """Something that answers queries by writing labels into the store.

    A teacher may also say, as ``annotators`` (a tuple of names), whom it answers as: only
    their earlier answers are asked again (``query.repeat_fraction``), and it leaves
    queries addressed to anyone else alone. Without it (a person in the viewer, most
    custom teachers), anyone's may be.
    """

    name: str
    synchronous: bool
    """True when ``ask`` has written every answer by the time it returns."""

    def ask(self, store: Store, queries: Sequence[Query], clips: dict[int, Clip]) -> None: ...


class SimulatedTeacher:
    """B-Pref's scripted teacher; with default parameters, a perfect oracle."""

    synchronous = True

    def __init__(self, score: ScoreFn = true_reward, beta: float = math.inf, gamma: float = 1.0,
                 mistake: float = 0.0, skip_threshold: float | None = None,
                 equal_threshold: float = 0.0, rng: np.random.Generator | None = None,
                 name: str = "oracle", relative_thresholds: bool = False):
        self.score = score
        self.beta, self.gamma, self.mistake = beta, gamma, mistake
        self.skip_threshold, self.equal_threshold = skip_threshold, equal_threshold
        self.relative_thresholds = relative_thresholds
        self.rng = rng
        """None until a run gives it the run's teacher stream (``default_rng([seed, 1])``);
        used standalone without one, it draws from a fresh, unseeded generator."""
        self.name = name

    def clip_return(self, clip: Clip) -> float:
        scores = np.asarray(self.score(clip), dtype=np.float64)
        if scores.shape != (len(clip),):
            raise ValueError(f"score function returned shape {scores.shape}, "
                             f"expected ({len(clip)},) per-step scores")
        weights = self.gamma ** np.arange(len(clip) - 1, -1, -1, dtype=np.float64)
        return float(np.dot(weights, scores))

    def answer(self, clip_a: Clip, clip_b: Clip, scale: float = 1.0) -> str:
        """One of 'a', 'b', 'equal', 'skip'. ``scale`` multiplies the skip and equal
        thresholds (``ask`` passes the batch's margin where thresholds are relative)."""
        ra, rb = self.clip_return(clip_a), self.clip_return(clip_b)
        # Draw every random number for every pair, so one answer's branch never shifts the
        # random stream of the next (same seed, same labels, whatever the thresholds).
        if self.rng is None:
            self.rng = np.random.default_rng()
        u_pref, u_mistake = self.rng.random(2)
        if self.skip_threshold is not None and max(ra, rb) < self.skip_threshold * scale:
            return "skip"
        if abs(ra - rb) < self.equal_threshold * scale:
            return "equal"
        if math.isinf(self.beta):
            p_a = 1.0 if ra > rb else 0.0 if ra < rb else 0.5
        else:
            p_a = 1.0 / (1.0 + math.exp(-max(min(self.beta * (ra - rb), 700.0), -700.0)))
        choice = "a" if u_pref < p_a else "b"
        if u_mistake < self.mistake:
            choice = "b" if choice == "a" else "a"
        return choice

    def margin(self, clips: Sequence[Clip]) -> float:
        """B-Pref's scale for relative thresholds: |mean return| of ``clips``."""
        return abs(float(np.mean([self.clip_return(c) for c in clips]))) if clips else 1.0

    @property
    def annotators(self) -> tuple[str, ...]:
        return (self.name,)  # its labels carry its name as their annotator

    def ask(self, store: Store, queries: Sequence[Query], clips: dict[int, Clip]) -> None:
        queries = [q for q in queries if q.for_annotator in (None, self.name)]
        scale = 1.0
        if self.relative_thresholds:
            ids = sorted({i for q in queries for i in (q.clip_a, q.clip_b)})
            scale = self.margin([clips[i] for i in ids])
        for i, q in enumerate(queries):  # each label committed on its own, like a person's
            if i == len(queries) // 2:
                failpoint("label")
            store.add_label(q.id, self.answer(clips[q.clip_a], clips[q.clip_b], scale),
                            self.name)


class CrowdTeacher:
    """Several simulated annotators (``teacher.kind: crowd``): each query is answered by one
    of them, drawn at random, and stored under their name, as a labelling team would. Each
    member is a ``SimulatedTeacher`` with its own mistake rate and random stream."""

    synchronous = True
    name = "crowd"

    def __init__(self, members: Sequence[SimulatedTeacher], rng: np.random.Generator):
        if not members:
            raise ConfigError("teacher.crowd_mistakes: a crowd needs at least one annotator")
        self.members, self.rng = list(members), rng
        self.annotators = tuple(m.name for m in self.members)

    def ask(self, store: Store, queries: Sequence[Query], clips: dict[int, Clip]) -> None:
        # A query addressed to someone outside the crowd is not theirs to answer.
        queries = [q for q in queries if q.for_annotator in (None, *self.annotators)]
        first = self.members[0]
        scale = 1.0
        if first.relative_thresholds:
            ids = sorted({i for q in queries for i in (q.clip_a, q.clip_b)})
            scale = first.margin([clips[i] for i in ids])
        # Who has answered each pair already, in the store (a batch a stop cut short) and
        # then in this batch: nobody answers the same pair twice, repeats aside.
        answered: dict[tuple[int, int], set[int]] = defaultdict(set)
        pairs = {_pair(q) for q in queries if q.for_annotator is None}
        for a in store.answered() if pairs else ():
            if (pair := _pair(a)) in pairs and a.annotator in self.annotators:
                answered[pair].add(self.annotators.index(a.annotator))
        who = self.rng.integers(len(self.members), size=len(queries))
        for i, (q, k) in enumerate(zip(queries, who, strict=True)):
            if i == len(queries) // 2:
                failpoint("label")
            member = self.members[self._member_for(q, int(k), answered)]
            store.add_label(q.id, member.answer(clips[q.clip_a], clips[q.clip_b], scale),
                            self.name, annotator=member.name)


    def _member_for(self, query: Query, drawn: int,
                    answered: dict[tuple[int, int], set[int]]) -> int:
        """Which member answers ``query``: the one it is addressed to (a repeat), else the
        one ``drawn`` at random, moved on to the next member who has not answered this pair
        in the batch yet (``query.overlap``: several people per pair), while there is one."""
        names = self.annotators
        if query.for_annotator in names:
            return names.index(query.for_annotator)
        taken = answered[_pair(query)]
        k = next((j % len(names) for j in range(drawn, drawn + len(names))
                  if j % len(names) not in taken), drawn)
        taken.add(k)
        return k


def _pair(q: Query | AnsweredPair) -> tuple[int, int]:
    """The unordered pair of clips a query (or an answer) is about."""
    return min(q.clip_a, q.clip_b), max(q.clip_a, q.clip_b)


def _crowd(cfg: TeacherConfig, rng: np.random.Generator, score: ScoreFn) -> Teacher:
    streams = rng.spawn(len(cfg.crowd_mistakes) + 1)
    members = [SimulatedTeacher(
        score=score, beta=cfg.beta, gamma=cfg.gamma, mistake=m,
        skip_threshold=cfg.skip_threshold, equal_threshold=cfg.equal_threshold,
        rng=streams[i], name=f"sim-{i}", relative_thresholds=cfg.relative_thresholds)
        for i, m in enumerate(cfg.crowd_mistakes)]
    return CrowdTeacher(members, streams[-1])


class HumanTeacher:
    """A person answering in the viewer (``rlhf label RUN_DIR``): queries wait in the store.

    ``ask`` returns at once. The loop then either keeps training while labels arrive
    (``teacher.asynchronous``, the default) or waits for every query of the batch.
    """

    synchronous = False
    name = "human"

    def ask(self, store: Store, queries: Sequence[Query], clips: dict[int, Clip]) -> None:
        pass  # the queries are already in the store, where the viewer finds them


def load_score_fn(spec: str | None, key: str = "teacher.score") -> ScoreFn:
    """Import ``module:function``; None gives the env's own reward."""
    if spec is None:
        return true_reward
    fn = lookup(spec, {}, key, "a scoring function (clip -> (T,) per-step scores)")
    if not callable(fn):
        raise ConfigError(f"{key}: {spec!r} is a {type(fn).__name__}, not a function "
                          "(clip -> (T,) per-step scores)")
    return fn


TeacherFactory = Callable[[TeacherConfig, np.random.Generator, ScoreFn], Teacher]
"""What ``teacher.kind: module:attr`` names: a class or function taking the teacher config,
the run's teacher RNG stream and the configured scoring function, returning a Teacher."""


def _simulated(cfg: TeacherConfig, rng: np.random.Generator, score: ScoreFn) -> Teacher:
    return SimulatedTeacher(
        score=score, beta=cfg.beta, gamma=cfg.gamma, mistake=cfg.mistake,
        skip_threshold=cfg.skip_threshold, equal_threshold=cfg.equal_threshold, rng=rng,
        name=cfg.kind, relative_thresholds=cfg.relative_thresholds)


TEACHERS: dict[str, TeacherFactory] = {
    "oracle": _simulated,  # with the default settings: always the better clip
    "irrational": _simulated,  # B-Pref's settings (beta, mistake, thresholds) by name
    "crowd": _crowd,  # several simulated annotators, one mistake rate each
    "human": lambda cfg, rng, score: HumanTeacher(),
}
"""``teacher.kind``'s built-in names; anything else is ``module:attr`` (a TeacherFactory)."""


def make_teacher(cfg: TeacherConfig, rng: np.random.Generator,
                 score: ScoreFn | None = None) -> Teacher:
    """The teacher ``teacher.kind`` names; ConfigError naming the key otherwise."""
    what = "a teacher factory (teacher config, rng, score) -> Teacher"
    factory = lookup(cfg.kind, TEACHERS, "teacher.kind", what)
    if not callable(factory):
        raise ConfigError(f"teacher.kind: {cfg.kind!r} is a {type(factory).__name__}, not {what}")
    teacher = make(factory, "teacher.kind", cfg.kind, cfg, rng, score or load_score_fn(cfg.score))
    if not (callable(getattr(teacher, "ask", None))
            and isinstance(getattr(teacher, "synchronous", None), bool)
            and isinstance(getattr(teacher, "name", None), str)):
        raise ConfigError(f"teacher.kind: {cfg.kind!r} made a {type(teacher).__name__}, which is "
                          "not a Teacher (it needs ask(store, queries, clips), a bool "
                          "'synchronous' and a str 'name'; see rlhf.teachers)")
    return teacher
