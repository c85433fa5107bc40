"""Choosing which pairs of clips to ask about.

A candidate pool of random pairs, ``candidates`` times larger than the number wanted, is
scored and the best-scoring pairs are asked:

- ``random``: no scoring (the pool's first n pairs);
- ``disagreement``: variance across ensemble members of P(a > b) (Christiano et al.);
- ``entropy``: binary entropy of the ensemble-mean P(a > b), i.e. pairs the model finds
  closest to a coin flip (B-Pref / PEBBLE).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from rlhf.errors import ConfigError
from rlhf.registry import lookup, make


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


STRATEGIES: dict[str, type[QueryStrategy]] = {
    "random": RandomQueries, "disagreement": DisagreementQueries, "entropy": EntropyQueries,
}


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
                 exclude: set[tuple[int, int]] | frozenset = frozenset()) -> np.ndarray:
    """Pick up to n distinct pairs (n, 2) of indices into a pool of C clips.

    member_returns: (M, C) predicted return of every pool clip under every member.
    exclude: pool-index pairs (either order) that must not be asked again.
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
    return pool[order[:n]]
