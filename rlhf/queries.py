"""Choosing which pairs of clips to ask about.

A candidate pool of random pairs, ``candidates`` times larger than the number wanted, is
scored and the best-scoring pairs are asked:

- ``random``: no scoring (the pool's first n pairs);
- ``disagreement``: variance across ensemble members of P(a > b) (Christiano et al.);
- ``entropy``: binary entropy of the ensemble-mean P(a > b), i.e. pairs the model finds
  closest to a coin flip (B-Pref / PEBBLE);
- ``kcenter``, ``disagreement-kcenter``, ``entropy-kcenter``: a diverse batch (B-Pref): the
  most uncertain half of the pool by that score (all of it for ``kcenter``), then k-center
  greedy on the pairs' observations, each new pair the one farthest from the pairs already
  chosen or asked, so that a batch does not spend its labels on near-copies of one pair.

``query.recent_clips`` (in ``PreferenceLearner``) restricts the candidates to the newest
clips: queries about what the current policy does (QPA, Hu et al. 2023).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rlhf.errors import ConfigError
from rlhf.registry import lookup, make

if TYPE_CHECKING:
    from rlhf.clips import Clip


class QueryStrategy(Protocol):
    name: str

    def scores(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        """Member returns (M, K) of each side of K candidate pairs -> scores (K,), higher
        is asked first."""
        ...


def member_preferences(returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
    """(M, K) member returns of each side -> (M, K) P_m(a > b)."""
    d = np.clip(returns_a - returns_b, -50, 50)
    return 1.0 / (1.0 + np.exp(-d))


class RandomQueries:
    name = "random"

    def scores(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        return np.zeros(returns_a.shape[1])


class DisagreementQueries:
    name = "disagreement"

    def scores(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        return member_preferences(returns_a, returns_b).var(axis=0)


class EntropyQueries:
    name = "entropy"

    def scores(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        p = member_preferences(returns_a, returns_b).mean(axis=0).clip(1e-7, 1 - 1e-7)
        return -(p * np.log(p) + (1 - p) * np.log(1 - p))


class DiverseQueries:
    """A score's most uncertain ``share`` of the pool, then k-center greedy over the pairs'
    features (``select_pairs`` sees ``diverse`` and asks for them)."""

    diverse = True

    def __init__(self, base: QueryStrategy | None, share: float = 0.5):
        self.base, self.share = base, share if base is not None else 1.0
        self.name = "kcenter" if base is None else f"{base.name}-kcenter"

    def scores(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        if self.base is None:
            return np.zeros(returns_a.shape[1])
        return self.base.scores(returns_a, returns_b)


STRATEGIES: dict[str, type[QueryStrategy] | Callable[[], QueryStrategy]] = {
    "random": RandomQueries, "disagreement": DisagreementQueries, "entropy": EntropyQueries,
    "kcenter": lambda: DiverseQueries(None),
    "disagreement-kcenter": lambda: DiverseQueries(DisagreementQueries()),
    "entropy-kcenter": lambda: DiverseQueries(EntropyQueries()),
}

FEATURE_DIMS = 256
"""Clip features for k-center longer than this are randomly projected down to it."""


def clip_features(clips: Sequence[Clip]) -> np.ndarray:
    """(C, F) float32: each clip's observations, flattened over its steps (B-Pref's segment
    features); above ``FEATURE_DIMS`` a fixed Gaussian random projection, which keeps
    distances nearly as they were (Johnson-Lindenstrauss) at a fraction of the cost."""
    x = np.stack([np.asarray(c.obs, dtype=np.float32).reshape(-1) for c in clips])
    if x.shape[1] <= FEATURE_DIMS:
        return x
    proj = np.random.default_rng(0).standard_normal((x.shape[1], FEATURE_DIMS))
    return (x @ (proj / np.sqrt(FEATURE_DIMS)).astype(np.float32)).astype(np.float32)


def kcenter_greedy(features: np.ndarray, n: int, centres: np.ndarray | None = None
                   ) -> np.ndarray:
    """Indices (n,) into ``features`` (K, F), each the point farthest (Euclidean) from the
    ones chosen before it and from ``centres`` (L, F); ties go to the lower index."""
    n = min(n, len(features))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if centres is not None and len(centres):
        nearest = np.min(np.linalg.norm(features[:, None] - centres[None], axis=2), axis=1)
    else:
        nearest = np.full(len(features), np.inf)
    chosen: list[int] = []
    for _ in range(n):
        i = int(np.argmax(nearest))  # with no centres, the first (the highest-scored)
        chosen.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(features - features[i], axis=1))
        nearest[chosen] = -1.0
    return np.array(chosen, dtype=np.int64)


def make_strategy(name: str) -> QueryStrategy:
    """``query.strategy``: a name in ``STRATEGIES`` or ``module:attr`` naming a class (or a
    function of no arguments) that makes a ``QueryStrategy``; ConfigError otherwise."""
    factory = lookup(name, STRATEGIES, "query.strategy", "your own strategy")
    strategy = make(factory, "query.strategy", name) if callable(factory) else None
    if not callable(getattr(strategy, "scores", None)):
        raise ConfigError(f"query.strategy: {name!r} does not make a query strategy (an object "
                          "with scores(returns_a, returns_b) -> (K,) scores; see rlhf.queries)")
    return strategy


def candidate_pairs(n_clips: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(n_pairs, 2) random index pairs into a pool of n_clips, never a clip with itself."""
    if n_clips < 2:
        raise ValueError(f"need at least 2 clips to make a pair, have {n_clips}")
    a = rng.integers(0, n_clips, n_pairs)
    b = (a + rng.integers(1, n_clips, n_pairs)) % n_clips
    return np.stack([a, b], axis=1)


def select_pairs(strategy: QueryStrategy, member_returns: np.ndarray, n: int,
                 candidates: int, rng: np.random.Generator,
                 exclude: set[tuple[int, int]] | frozenset = frozenset(),
                 features: np.ndarray | None = None) -> np.ndarray:
    """Pick up to n distinct pairs (n, 2) of indices into a pool of C clips.

    member_returns: (M, C) predicted return of every pool clip under every member.
    exclude: pool-index pairs (either order) that must not be asked again.
    features: (C, F) clip features, for a ``diverse`` strategy (k-center over pairs; the
        excluded pairs, already asked, are its starting centres).
    """
    pool = candidate_pairs(member_returns.shape[1], max(n * candidates, n), rng)
    # Drop repeats (in either order) and excluded pairs, keeping the first occurrence.
    key = np.sort(pool, axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.zeros(len(pool), bool)
    keep[first] = True
    if exclude:
        banned = {(min(a, b), max(a, b)) for a, b in exclude}
        keep &= np.array([(int(a), int(b)) not in banned for a, b in key])
    pool = pool[keep]
    if isinstance(strategy, RandomQueries):
        return pool[:n]
    s = strategy.scores(member_returns[:, pool[:, 0]], member_returns[:, pool[:, 1]])
    order = np.argsort(-s, kind="stable")
    if not getattr(strategy, "diverse", False):
        return pool[order[:n]]
    if features is None:
        raise ValueError(f"query strategy {strategy.name!r} needs the clips' features")
    top = pool[order[:max(n, int(len(pool) * getattr(strategy, "share", 1.0)))]]

    def pair_features(pairs: np.ndarray) -> np.ndarray:
        return np.concatenate([features[pairs[:, 0]], features[pairs[:, 1]]], axis=1)

    asked = np.array(sorted(exclude), dtype=np.int64).reshape(-1, 2)
    return top[kcenter_greedy(pair_features(top), n, pair_features(asked))]
