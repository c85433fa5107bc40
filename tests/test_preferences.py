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


def _learner(store: Store, teacher=None, strategy=None, seed: int = 0, robust: bool = False,
             **team) -> PreferenceLearner:
    spec = FeatureSpec.from_spaces(gym.spaces.Box(-np.inf, np.inf, (3,)),
                                   gym.spaces.Box(-1, 1, (1,)))
    model = RewardModel(spec, 3, [16], seed=seed)
    cfg = RewardConfig(ensemble=3, hidden=[16], device="cpu", robust=robust)
    trainer = RewardTrainer(model, cfg, T, seed=seed)
    return PreferenceLearner(trainer, store, teacher or SimulatedTeacher(),
                             strategy or DisagreementQueries(),
                             np.random.default_rng([seed, 7]), candidates=500, **team)


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


def test_a_team_answers_each_pair_twice_and_some_again_to_the_same_person(tmp_path):
    """query.overlap 2 and query.repeat_fraction 0.25 with a crowd of 3: every batch is
    exactly its budget, each new pair goes to two different members, each repeat to the
    member who answered it first; the statistics see the overlap and the repeats."""
    from rlhf.annotators import annotator_stats
    from rlhf.config import TeacherConfig
    from rlhf.teachers import make_teacher

    pool = _clips(40, np.random.default_rng(4))
    crowd = make_teacher(TeacherConfig(kind="crowd", crowd_mistakes=[0.0, 0.0, 0.0]),
                         np.random.default_rng(5))
    with Store(tmp_path / "s.sqlite", create=True) as store:
        learner = _learner(store, teacher=crowd, overlap=2, repeat_fraction=0.25)
        for it in range(4):
            before = store.counts().queries
            for i, clip in learner.ask(pool, 12, iteration=it):
                pool[i] = clip
            assert store.counts().queries - before == 12 and store.counts().pending == 0
        queries = {q.id: q for q in store.queries()}
        answers = store.answered()
    by_pair: dict[tuple[int, int], list[str]] = {}
    first_by: dict[int, str] = {a.label_id: a.annotator for a in answers}
    repeats = 0
    for a in answers:
        q = queries[a.query_id]
        if q.repeat_of is not None:
            repeats += 1
            assert a.annotator == q.for_annotator == first_by[q.repeat_of]
        else:
            by_pair.setdefault((q.clip_a, q.clip_b), []).append(a.annotator)
    assert repeats >= 6  # 0.25 of the 36 asked after the first batch, rounded at random
    # Two different members per pair; a batch whose count is odd has one pair short.
    assert all(len(set(who)) == len(who) for who in by_pair.values())
    short = sum(len(who) == 1 for who in by_pair.values())
    assert sum(len(who) == 2 for who in by_pair.values()) > 0 and short <= 4
    rows = annotator_stats(answers)
    assert sum(r.self_consistency_n for r in rows) == repeats
    assert all(r.self_consistency == 1.0 for r in rows if r.self_consistency_n)
    assert all(r.agreement_n > 0 for r in rows)


def test_robust_fits_count_the_distrusted_labels_of_each_annotator(tmp_path):
    """reward.robust with a crowd: the labels a fit leaves out or flips are counted per
    annotator (every one named, zeros too), and the member who always answers wrong is
    the one the model distrusts."""
    from rlhf.config import TeacherConfig
    from rlhf.teachers import make_teacher

    pool = _clips(80, np.random.default_rng(6))
    crowd = make_teacher(TeacherConfig(kind="crowd", crowd_mistakes=[0.0, 0.0, 0.0, 1.0]),
                         np.random.default_rng(7))
    with Store(tmp_path / "s.sqlite", create=True) as store:
        learner = _learner(store, teacher=crowd, robust=True)
        for it in range(5):
            for i, clip in learner.ask(pool, 30, iteration=it):
                pool[i] = clip
            learner.fit()
        by = learner.distrusted_by
        answered = {a.annotator for a in store.answered()}
    assert set(by) == answered == {"sim-0", "sim-1", "sim-2", "sim-3"}
    trainer = learner.trainer
    assert sum(by.values()) == int((trainer.distrusted | trainer.flipped).sum()) > 0
    assert by["sim-3"] > 3 * max(by["sim-0"], by["sim-1"], by["sim-2"]), by
