import itertools

import numpy as np

from rlhf.loop import label_schedule
from rlhf.queries import (
    DisagreementQueries,
    EntropyQueries,
    RandomQueries,
    candidate_pairs,
    select_pairs,
)


def test_label_schedule_sums_to_budget_and_falls():
    s = label_schedule(200, 0.25, 10, 1.0)
    assert sum(s) == 200 and s[0] == 50 and len(s) == 11
    assert all(a >= b for a, b in itertools.pairwise(s[1:]))
    assert s[1] > 2 * s[-1]
    assert sum(label_schedule(7, 0.5, 20, 1.0)) == 7


def test_candidate_pairs_never_pair_a_clip_with_itself():
    p = candidate_pairs(3, 1000, np.random.default_rng(0))
    assert (p[:, 0] != p[:, 1]).all() and p.min() == 0 and p.max() == 2


def test_disagreement_picks_pairs_the_members_disagree_on():
    # 4 clips; members agree on clips 0/1 and disagree wildly on clips 2/3.
    returns = np.array([[0.0, 5.0, 10.0, -10.0],
                        [0.0, 5.0, -10.0, 10.0],
                        [0.0, 5.0, 10.0, -10.0]])
    rng = np.random.default_rng(0)
    pairs = select_pairs(DisagreementQueries(), returns, 3, 20, rng)
    assert set(pairs[0]) == {2, 3}
    assert len({frozenset(p) for p in pairs.tolist()}) == 3  # never the same pair twice


def test_entropy_picks_pairs_closest_to_a_coin_flip():
    returns = np.array([[0.0, 10.0, 0.1, 20.0]])  # clips 0 and 2 are nearly equal
    pairs = select_pairs(EntropyQueries(), returns, 3, 30, np.random.default_rng(0))
    assert set(pairs[0]) == {0, 2}


def test_excluded_pairs_are_not_asked_again():
    pairs = select_pairs(RandomQueries(), np.zeros((1, 3)), 5, 10, np.random.default_rng(0),
                         exclude={(1, 0), (2, 1)})
    assert [sorted(p) for p in pairs.tolist()] == [[0, 2]]


def test_random_is_uniform_over_the_pool():
    pairs = select_pairs(RandomQueries(), np.zeros((2, 60)), 600, 3, np.random.default_rng(0))
    assert len(pairs) == 600
    counts = np.bincount(pairs.ravel(), minlength=60)
    assert counts.min() > 8 and counts.max() < 35  # about 20 each


def test_kcenter_picks_the_spread_out_points_of_a_toy_set():
    from rlhf.queries import kcenter_greedy

    # Three tight clusters far apart, the first listed thrice as often: three picks take
    # one point from each cluster, not three from the crowded one.
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([centres[[0, 0, 0, 1, 2]].repeat(4, axis=0)
                             + rng.normal(0, 0.1, (20, 2))])
    picked = kcenter_greedy(points, 3)
    assert picked[0] == 0  # no centre given: the first (highest-scored) point starts
    assert sorted(np.argmin(np.linalg.norm(points[picked][:, None] - centres, axis=2),
                            axis=1).tolist()) == [0, 1, 2]
    # Pairs already asked count as centres: the farthest cluster from them comes first.
    first = kcenter_greedy(points, 1, centres=np.array([[0.0, 0.0], [10.0, 0.0]]))
    assert np.linalg.norm(points[first[0]] - centres[2]) < 1


def test_a_diverse_batch_spreads_over_the_uncertain_half():
    from rlhf.queries import DiverseQueries, make_strategy

    rng = np.random.default_rng(1)
    returns = rng.normal(size=(3, 60))
    features = rng.normal(size=(60, 4))
    strategy = make_strategy("disagreement-kcenter")
    assert isinstance(strategy, DiverseQueries) and strategy.name == "disagreement-kcenter"
    pairs = select_pairs(strategy, returns, 10, 20, np.random.default_rng(2),
                         features=features)
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 10
    # Drawn from the most uncertain half of the same pool (the same 200 draws, all ranked).
    plain = select_pairs(DisagreementQueries(), returns, 200, 1, np.random.default_rng(2))
    top_half = {tuple(p) for p in plain[:len(plain) // 2].tolist()}
    assert all(tuple(p) in top_half for p in pairs.tolist())
    # Farther apart than the 10 most uncertain pairs alone.
    def spread(ps: np.ndarray) -> float:
        f = np.concatenate([features[ps[:, 0]], features[ps[:, 1]]], axis=1)
        d = np.linalg.norm(f[:, None] - f[None], axis=2)
        return float(np.min(d[np.triu_indices(len(f), 1)]))
    assert spread(pairs) > spread(plain[:10])
