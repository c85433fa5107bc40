"""Preference learning without an environment: candidate pool → query selection → teacher →
store → reward fit.

The loop hands a ``PreferenceLearner`` the clips its collector cut from the agent's
rollouts; ``scripts/query_ablation.py`` hands it clips recorded by earlier runs. Either way
the same steps run: pairs are chosen from the pool by the ensemble's disagreement (random
until the reward model is first fitted), never a pair asked before; the clips of chosen
pairs are written to the store once; the queries are stored and handed to the teacher; a
fit reads every standing label back from the store (so labels a person gave in the viewer,
or before a resume, count the same as a simulated teacher's).

    learner = PreferenceLearner(trainer, store, teacher, strategy, rng, candidates=10_000)
    stored = learner.ask(pool, n=50, iteration=0)     # [(pool index, clip with its id)]
    stats = learner.fit(recent=pool[-256:])           # FitStats, or None with no labels
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlhf.clips import Clip
from rlhf.faults import failpoint
from rlhf.queries import QueryStrategy, RandomQueries, clip_features, select_pairs
from rlhf.reward.trainer import FitStats, RewardTrainer
from rlhf.store import Store, StoreCounts
from rlhf.store_schema import AnsweredPair
from rlhf.teachers import Teacher


class PreferenceLearner:
    """The reward model's side of the loop: asks about pairs of clips, fits to the answers.

    ``clips``: every stored clip this learner has seen, by id, without recorded frames (the
    reward model and teachers never need them; they would hold ~1 MB per clip).
    """

    def __init__(self, trainer: RewardTrainer, store: Store, teacher: Teacher,
                 strategy: QueryStrategy, rng: np.random.Generator, candidates: int,
                 recent_clips: int = 0, overlap: int = 1, repeat_fraction: float = 0.0):
        self.trainer, self.store, self.teacher = trainer, store, teacher
        self.strategy, self.rng, self.candidates = strategy, rng, candidates
        self.recent_clips = recent_clips
        """Candidates only from the pool's newest clips (``query.recent_clips``; 0: all)."""
        self.overlap, self.repeat_fraction = overlap, repeat_fraction
        """Annotators per chosen pair (``query.overlap``), and the share of each batch that
        asks a person again about one of their earlier answers (``query.repeat_fraction``)."""
        self.clips: dict[int, Clip] = {}
        self.fitted_labels = 0
        """Trainable labels (not skips) at the last fit."""
        self.flip_rates: dict[str | None, float] = {}
        """Each annotator's estimated flip rate at the last fit (with
        ``reward.annotator_reliability``)."""
        self.distrusted_by: dict[str | None, int] = {}
        """Labels the last fit left out or flipped, per annotator (with ``reward.robust``;
        every annotator with a standing label, zeros included)."""
        self.last_fit: FitStats | None = None

    def ask(self, pool: Sequence[Clip], n: int, iteration: int) -> list[tuple[int, Clip]]:
        """Store ``n`` queries of ``iteration`` and have the teacher label them: repeats of
        earlier answers (``repeat_fraction`` of them, where there are answers to repeat) and
        new pairs chosen from ``pool`` (at least 2 clips), each asked ``overlap`` times (the
        last one fewer, where ``n`` leaves no whole number of copies).

        Returns ``(index into pool, stored clip)`` for each clip written to the store now:
        the stored copy carries its id, and the caller keeps it in place of the original so
        that a clip asked about again is not stored twice.
        """
        pool = list(pool)
        if n <= 0:
            return []
        repeats = self._choose_repeats(n)
        fresh = n - len(repeats)
        stored, pairs = self._choose_pairs(pool, -(-fresh // self.overlap)) if fresh else ([], [])
        failpoint("ask")
        copies = [pair for pair in pairs for _ in range(self.overlap)][:fresh]
        queries = self.store.add_queries(copies, iteration)
        if repeats:
            self.load_clips([i for a in repeats for i in (a.clip_a, a.clip_b)])
            queries += self.store.add_repeats(repeats, iteration)
        self.teacher.ask(self.store, queries, self.clips)
        return stored

    def _choose_repeats(self, n: int) -> list[AnsweredPair]:
        """About ``repeat_fraction * n`` earlier answers to ask again (rounded at random, so
        small batches repeat at the same rate on average); none at 0, drawing nothing.
        Only answers the teacher can give again (its ``annotators``; a person: anyone's)."""
        if not self.repeat_fraction:
            return []
        share = self.repeat_fraction * n
        k = int(share) + int(self.rng.random() < share - int(share))
        candidates = (self.store.repeat_candidates(getattr(self.teacher, "annotators", None))
                      if k else [])
        k = min(k, len(candidates))
        if not k:
            return []
        chosen = self.rng.choice(len(candidates), size=k, replace=False)
        return [candidates[i] for i in sorted(chosen)]

    def _choose_pairs(self, pool: list[Clip], n: int
                      ) -> tuple[list[tuple[int, Clip]], list[tuple[int, int]]]:
        """Up to ``n`` new pairs from ``pool``, their clips stored: (the clips stored now,
        with their pool index, and the pairs as stored clip ids)."""
        # Policy-aligned candidates (QPA): only the newest clips, what the agent does now.
        offset = max(0, len(pool) - self.recent_clips) if self.recent_clips else 0
        if len(pool) - offset < 2:
            offset = max(0, len(pool) - 2)
        cand = pool[offset:]
        model_ready = bool(self.trainer.model.fitted)
        returns = (self.trainer.clip_member_returns(cand) if model_ready
                   else np.zeros((self.trainer.model.members, len(cand))))
        strategy = self.strategy if model_ready else RandomQueries()
        # Never ask about the same pair twice: exclude pool pairs already in the store.
        index_of = {c.id: i for i, c in enumerate(cand) if c.id is not None}
        asked = {(index_of[a], index_of[b]) for a, b in self.store.asked_pairs(list(index_of))}
        features = clip_features(cand) if getattr(strategy, "diverse", False) else None
        pairs = offset + select_pairs(strategy, returns, n, self.candidates, self.rng,
                                      exclude=asked, features=features)
        new = [int(i) for i in np.unique(pairs) if pool[i].id is None]
        stored = list(zip(new, self.store.add_clips([pool[i] for i in new]), strict=True))
        for i, clip in stored:
            pool[i] = clip
            self.clips[clip.id] = clip.without_frames()
        return stored, [(pool[a].id, pool[b].id) for a, b in pairs]

    def answer_pending(self) -> None:
        """A simulated teacher answers the queries a stop left unanswered (never asked
        again); a person's stay pending for the viewer."""
        if not self.teacher.synchronous:
            return
        pending = self.store.pending_queries()
        if pending:
            self.load_clips([i for q in pending for i in (q.clip_a, q.clip_b)])
            self.teacher.ask(self.store, pending, self.clips)

    def load_clips(self, ids: np.ndarray | Sequence[int]) -> None:
        """Bring stored clips not yet in memory (a resumed run, a person's labels) into
        ``clips``, without their frames."""
        missing = sorted({int(i) for i in np.ravel(ids)} - self.clips.keys())
        self.clips.update({c.id: c.without_frames() for c in self.store.get_clips(missing)})

    def fit(self, recent: Sequence[Clip] = ()) -> FitStats | None:
        """Refit the reward model on every standing label; None when there is none yet.

        With ``reward.normalize`` the output is renormalised over ``recent`` (the agent's
        latest clips; default: every stored clip), so the agent's reward keeps unit scale.
        """
        pair_ids, mu, who = self.store.preferences_by()
        if len(mu) == 0:
            return None
        self.load_clips(pair_ids)
        self.trainer.sync(pair_ids, mu, self.clips)
        if self.trainer.cfg.annotator_reliability:
            self.flip_rates = self.trainer.estimate_label_noise(who)
        if self.trainer.cfg.pseudo_ratio:
            self.trainer.set_unlabelled(list(recent) or list(self.clips.values()))
        stats = self.trainer.fit()
        self.fitted_labels, self.last_fit = len(mu), stats
        if self.trainer.cfg.robust:
            screened = self.trainer.distrusted | self.trainer.flipped
            self.distrusted_by = dict.fromkeys(who, 0)
            for i in np.flatnonzero(screened):
                self.distrusted_by[who[i]] += 1
        if self.trainer.cfg.normalize:
            self.trainer.update_output_stats(list(recent) or list(self.clips.values()))
        return stats


def trainable(counts: StoreCounts) -> int:
    """Labels the reward model can learn from (skips are not), from ``Store.counts()``."""
    return counts.labels - counts.skipped
