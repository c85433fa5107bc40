"""The preference-learning room on its own: a real store, a real reward model, no env."""

import gymnasium as gym
import numpy as np

from rlhf.clips import Clip
from rlhf.config import RewardConfig
from rlhf.preferences import PreferenceLearner, trainable
from rlhf.queries import DisagreementQueries, EntropyQueries
from rlhf.reward.model import FeatureSpec, RewardModel
from rlhf.reward.trainer import RewardTrainer
from rlhf.store import Store
from rlhf.teachers import HumanTeacher, SimulatedTeacher

T = 10


def _clips(n: int, rng: np.random.Generator) -> list[Clip]:
    """Clips whose true reward is the first observation coordinate (learnable from obs)."""
    out = []
    for _ in range(n):
        obs = rng.normal(size=(T, 3)) + rng.normal()
        out.append(Clip(obs=obs, actions=rng.normal(size=(T, 1)), rewards=obs[:, 0].copy(),
                        dones=np.zeros(T, bool), last_obs=rng.normal(size=3)))
    return out


def _learner(store: Store, teacher=None, strategy=None, seed: int = 0) -> PreferenceLearner:
    spec = FeatureSpec.from_spaces(gym.spaces.Box(-np.inf, np.inf, (3,)),
                                   gym.spaces.Box(-1, 1, (1,)))
    model = RewardModel(spec, 3, [16], seed=seed)
    trainer = RewardTrainer(model, RewardConfig(ensemble=3, hidden=[16], device="cpu"), T,
                            seed=seed)
    return PreferenceLearner(trainer, store, teacher or SimulatedTeacher(),
                             strategy or DisagreementQueries(),
                             np.random.default_rng([seed, 7]), candidates=500)


def test_asks_each_pair_once_stores_each_clip_once_and_learns(tmp_path):
    rng = np.random.default_rng(0)
    pool, test = _clips(60, rng), _clips(30, rng)
    with Store(tmp_path / "s.sqlite", create=True) as store:
        learner = _learner(store)
        assert learner.fit() is None  # no label yet: nothing to fit
        for it in range(6):
            for i, clip in learner.ask(pool, 10, iteration=it):
                assert pool[i].id is None and clip.id is not None
                pool[i] = clip
            assert learner.fit() is not None
        counts = store.counts()
        assert trainable(counts) == learner.fitted_labels == 60 and counts.pending == 0
        asked = store.asked_pairs(store.clip_ids())
        assert len({frozenset(p) for p in asked}) == 60  # never the same pair twice
        # A clip asked about in two rounds was stored once: one row per distinct clip.
        assert sorted(store.clip_ids()) == sorted(c.id for c in pool if c.id is not None)
        assert len(learner.clips) == len(store.clip_ids())
        predicted = learner.trainer.clip_member_returns(test).mean(0)
    true = np.array([c.rewards.sum() for c in test])
    assert np.corrcoef(predicted, true)[0, 1] > 0.8


def test_the_first_round_is_random_and_the_same_for_every_strategy(tmp_path):
    pool = _clips(40, np.random.default_rng(1))
    asked = []
    for k, strategy in enumerate((DisagreementQueries(), EntropyQueries())):
        with Store(tmp_path / f"{k}.sqlite", create=True) as store:
            _learner(store, strategy=strategy, seed=3).ask(list(pool), 8, iteration=0)
            clips = {c.id: c for c in store.get_clips(store.clip_ids())}
            queries = [store.get_query(i) for i in range(1, store.counts().queries + 1)]
            asked.append([(clips[q.clip_a].true_return, clips[q.clip_b].true_return)
                          for q in queries])
    assert len(asked[0]) == 8 and asked[0] == asked[1]


def test_pending_queries_a_simulated_teacher_answers_and_a_person_keeps(tmp_path):
    pool = _clips(10, np.random.default_rng(2))
    for teacher, pending_after in ((SimulatedTeacher(), 0), (HumanTeacher(), 4)):
        with Store(tmp_path / f"{teacher.name}.sqlite", create=True) as store:
            stored = store.add_clips(pool)
            store.add_queries([(stored[i].id, stored[i + 1].id) for i in range(0, 8, 2)], 0)
            learner = _learner(store, teacher=teacher)  # as after a resume: nothing in memory
            learner.answer_pending()
            assert store.counts().pending == pending_after
            assert (learner.fit() is None) == bool(pending_after)


def test_policy_aligned_queries_come_from_the_newest_clips_only(tmp_path):
    pool = _clips(60, np.random.default_rng(4))
    with Store(tmp_path / "s.sqlite", create=True) as store:
        learner = _learner(store)
        learner.recent_clips = 15
        for it in range(3):
            for i, clip in learner.ask(pool, 5, iteration=it):
                assert i >= 45  # only the newest 15 of the 60 are candidates
                pool[i] = clip
            learner.fit()
        newest = {c.id for c in pool[45:]}
        queries = [store.get_query(i) for i in range(1, store.counts().queries + 1)]
        assert len(queries) == 15 and all({q.clip_a, q.clip_b} <= newest for q in queries)
