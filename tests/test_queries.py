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
