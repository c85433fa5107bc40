import math

import numpy as np
import pytest

from rlhf.clips import Clip
from rlhf.teachers import SimulatedTeacher


def _clip(rewards) -> Clip:
    r = np.asarray(rewards, dtype=np.float64)
    t = len(r)
    return Clip(obs=np.zeros((t, 1)), actions=np.zeros((t, 1)), rewards=r,
                dones=np.zeros(t, bool), last_obs=np.zeros(1))


def _pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(_clip(rng.normal(size=5)), _clip(rng.normal(size=5))) for _ in range(n)]


def _oracle(a, b):
    return "a" if a.true_return > b.true_return else "b"


def test_oracle_prefers_higher_return():
    teacher = SimulatedTeacher()
    assert all(teacher.answer(a, b) == _oracle(a, b) for a, b in _pairs(200))


def test_large_beta_equals_oracle_and_small_beta_is_noisy():
    pairs = _pairs(300)
    sharp = SimulatedTeacher(beta=1e6, rng=np.random.default_rng(1))
    assert all(sharp.answer(a, b) == _oracle(a, b) for a, b in pairs)
    noisy = SimulatedTeacher(beta=0.1, rng=np.random.default_rng(1))
    agree = np.mean([noisy.answer(a, b) == _oracle(a, b) for a, b in pairs])
    assert 0.4 < agree < 0.75  # sigmoid(0.1 * small differences) is near a coin flip


def test_beta_gives_the_boltzmann_probability():
    a, b = _clip([1.0, 0.0]), _clip([0.0, 0.0])
    teacher = SimulatedTeacher(beta=1.0, rng=np.random.default_rng(0))
    p = np.mean([teacher.answer(a, b) == "a" for _ in range(4000)])
    assert p == pytest.approx(1 / (1 + math.exp(-1)), abs=0.03)


def test_mistake_one_inverts_the_oracle():
    teacher = SimulatedTeacher(mistake=1.0)
    assert all(teacher.answer(a, b) != _oracle(a, b) for a, b in _pairs(100))


def test_equal_and_skip_thresholds():
    teacher = SimulatedTeacher(equal_threshold=0.5, skip_threshold=-10.0)
    assert teacher.answer(_clip([1.0, 1.0]), _clip([1.0, 1.2])) == "equal"
    assert teacher.answer(_clip([1.0, 1.0]), _clip([1.0, 2.0])) == "b"
    assert teacher.answer(_clip([-20.0]), _clip([-30.0])) == "skip"


def test_myopic_gamma_weighs_late_steps_more():
    early_good, late_good = _clip([3.0, 0.0, 0.0, 0.0]), _clip([0.0, 0.0, 0.0, 2.0])
    assert SimulatedTeacher().answer(early_good, late_good) == "a"
    assert SimulatedTeacher(gamma=0.5).answer(early_good, late_good) == "b"


def test_custom_score_function():
    # Score the opposite of the env's reward: the teacher must follow the score.
    teacher = SimulatedTeacher(score=lambda clip: -clip.rewards)
    assert all(teacher.answer(a, b) != _oracle(a, b) for a, b in _pairs(50))
    bad = SimulatedTeacher(score=lambda clip: clip.rewards.sum())
    with pytest.raises(ValueError, match="expected \\(5,\\) per-step scores"):
        bad.answer(*_pairs(1)[0])


def test_relative_thresholds_scale_with_the_batch_returns(tmp_path):
    # B-Pref: thresholds are fractions of the batch's mean clip return, so the same teacher
    # calls a 5-point difference 'equal' among returns near 100, not among returns near 1.
    from rlhf.store import Store

    teacher = SimulatedTeacher(equal_threshold=0.1, relative_thresholds=True)
    assert teacher.answer(_clip([50.0, 50.0]), _clip([50.0, 55.0])) == "b"  # scale 1
    with Store(tmp_path / "store.sqlite", create=True) as store:
        for returns, expected in (((100.0, 105.0), "equal"), ((1.0, 1.5), "b")):
            a, b = store.add_clips([_clip([returns[0]]), _clip([returns[1]])])
            (query,) = store.add_queries([(a.id, b.id)], 0)
            teacher.ask(store, [query], {a.id: a, b.id: b})
            assert store.labels()[-1].choice == expected


def test_score_reward_scores_each_step_as_the_collectors_clip():
    """The baseline's reward is the score of the same clip the teacher would see: CartPole's
    preset score reads observations and the episode end (it crashed on obs=None)."""
    import gymnasium as gym

    from rlhf.scores import ScoreReward, cartpole_upright

    env = ScoreReward(gym.make("CartPole-v1"), cartpole_upright)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    seen, actions, scores, done = [obs], [], [], False
    while not done:
        actions.append(int(rng.integers(2)))
        obs, score, terminated, truncated, info = env.step(actions[-1])
        seen.append(obs)
        scores.append(score)
        assert info["env_reward"] == 1.0
        done = terminated or truncated
    t = len(actions)
    clip = Clip(obs=np.array(seen[:-1]), actions=np.array(actions), rewards=np.ones(t),
                dones=np.arange(t) == t - 1, last_obs=seen[-1])
    assert np.allclose(scores, cartpole_upright(clip))
    assert scores[-1] == -1.0  # the early termination is scored as the clip's end
    env.close()


def test_a_crowd_answers_under_each_members_name_with_their_own_mistakes(tmp_path):
    """teacher.kind: crowd: each query goes to one simulated annotator, stored under their
    name; the careless one (mistake 1.0: always wrong) is the only one against the return."""
    import numpy as np

    from rlhf.annotators import annotator_stats
    from rlhf.clips import Clip
    from rlhf.config import TeacherConfig
    from rlhf.store import Store
    from rlhf.teachers import make_teacher

    rng = np.random.default_rng(0)
    clips = [Clip(obs=np.zeros((3, 1), np.float32), actions=np.zeros((3, 1), np.float32),
                  rewards=np.full(3, float(i)), dones=np.zeros(3, bool),
                  last_obs=np.zeros(1, np.float32), env_step=i) for i in range(12)]
    teacher = make_teacher(TeacherConfig(kind="crowd", crowd_mistakes=[0.0, 0.0, 1.0]),
                           np.random.default_rng(1))
    with Store(tmp_path / "s.sqlite", create=True) as store:
        stored = store.add_clips(clips)
        pairs = [tuple(rng.choice(12, 2, replace=False)) for _ in range(60)]
        queries = store.add_queries([(stored[a].id, stored[b].id) for a, b in pairs], 0)
        teacher.ask(store, queries, {c.id: c for c in stored})
        rows = {r.annotator: r for r in annotator_stats(store.answered())}
        assert {lab.teacher for lab in store.labels()} == {"crowd"}
    assert set(rows) == {"sim-0", "sim-1", "sim-2"} and sum(r.labels for r in rows.values()) == 60
    assert rows["sim-0"].gold_agreement == rows["sim-1"].gold_agreement == 1.0
    assert rows["sim-2"].gold_agreement == 0.0
    # Same seed, same crowd: the same annotator for each query, the same answers.
    with Store(tmp_path / "t.sqlite", create=True) as store:
        stored = store.add_clips(clips)
        queries = store.add_queries([(stored[a].id, stored[b].id) for a, b in pairs], 0)
        make_teacher(TeacherConfig(kind="crowd", crowd_mistakes=[0.0, 0.0, 1.0]),
                     np.random.default_rng(1)).ask(store, queries, {c.id: c for c in stored})
        again = {r.annotator: (r.labels, r.gold_agreement)
                 for r in annotator_stats(store.answered())}
    assert again == {k: (r.labels, r.gold_agreement) for k, r in rows.items()}


def test_a_crowd_never_gives_one_member_the_same_pair_twice_across_batches(tmp_path):
    """The second copy of a pair, asked after a stop cut the batch short, goes to a member
    other than the one who answered the first; a query addressed to someone outside the
    crowd is left for them."""
    import numpy as np

    from rlhf.clips import Clip
    from rlhf.config import TeacherConfig
    from rlhf.store import Store
    from rlhf.teachers import make_teacher

    clips = [Clip(obs=np.zeros((3, 1), np.float32), actions=np.zeros((3, 1), np.float32),
                  rewards=np.full(3, float(i)), dones=np.zeros(3, bool),
                  last_obs=np.zeros(1, np.float32), env_step=i) for i in range(2)]
    for seed in range(8):
        teacher = make_teacher(TeacherConfig(kind="crowd", crowd_mistakes=[0.0, 0.0]),
                               np.random.default_rng(seed))
        with Store(tmp_path / f"{seed}.sqlite", create=True) as store:
            a, b = store.add_clips(clips)
            first, second = store.add_queries([(a.id, b.id)] * 2, 0)
            by_id = {a.id: a, b.id: b}
            teacher.ask(store, [first], by_id)
            teacher.ask(store, [second], by_id)
            who = [lab.annotator for lab in store.labels()]
            assert len(who) == 2 and len(set(who)) == 2, who
            (alice,) = store.add_repeats([store.answered()[0]], 1)
            stranger = store.add_repeats([], 1)
            assert stranger == []
        with Store(tmp_path / f"{seed}.sqlite") as store:
            store.db.execute("UPDATE queries SET for_annotator='alice' WHERE id=?", (alice.id,))
            teacher.ask(store, [store.get_query(alice.id)], by_id)
            assert store.counts().pending == 1  # alice's, not the crowd's to answer
