"""Which two parameter vectors to show next (``tune.strategy``).

- ``eubo``: the incumbent (the seen point of highest posterior mean) against the candidate
  that maximises the expected utility of the best option of the two (Astudillo et al. 2023,
  BoTorch's ``AnalyticExpectedUtilityOfBestOption`` with the incumbent as
  ``previous_winner``), over a scrambled Sobol set plus points near the incumbent. (Both
  points optimised jointly with ``optimize_acqf`` was tried: on Reach2D it kept asking the
  box's corners and ended further from the best, and L-BFGS carried floating-point noise
  into the pairs, so one seed did not give one sequence of pairs.)
- ``incumbent-random``: the incumbent against a uniformly random candidate.
- ``random``: two uniformly random candidates (the baseline of the benchmark).

Before the first comparison every strategy shows two random points. A strategy of one's
own is ``module:attr`` naming a ``PairStrategy``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from rlhf.errors import ConfigError
from rlhf.registry import lookup
from rlhf.tune.model import DTYPE, PreferenceGP
from rlhf.tune.space import Space

LOCAL_SHARE = 0.25
"""Of the acquisition's candidates, the share drawn near the incumbent (the rest: Sobol)."""
LOCAL_SCALE = 0.04
"""Their spread on the unit cube (a Gaussian's std): refinement around the incumbent."""


class PairStrategy(Protocol):
    """Picks the next pair: two unit-cube points (d,) each, snapped to the space."""

    def __call__(self, gp: PreferenceGP, space: Space, rng: np.random.Generator,
                 candidates: int) -> tuple[np.ndarray, np.ndarray]: ...


def _random_points(space: Space, rng: np.random.Generator, n: int) -> np.ndarray:
    return space.snap(rng.random((n, space.dim)))


def _incumbent(gp: PreferenceGP, space: Space, rng: np.random.Generator) -> np.ndarray:
    best = gp.incumbent()
    if best is None:
        return _random_points(space, rng, 1)[0]
    assert gp.data is not None
    return gp.data.points[best]


def _other_than(x: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` without those equal to ``x`` (a pair of one point teaches nothing)."""
    keep = np.abs(points - x).max(axis=1) > 1e-9
    return points[keep] if keep.any() else points


def random_pair(gp: PreferenceGP, space: Space, rng: np.random.Generator,
                candidates: int) -> tuple[np.ndarray, np.ndarray]:
    a = _random_points(space, rng, 1)[0]
    b = _other_than(a, _random_points(space, rng, 8))[0]
    return a, b


def incumbent_random(gp: PreferenceGP, space: Space, rng: np.random.Generator,
                     candidates: int) -> tuple[np.ndarray, np.ndarray]:
    if gp.model is None:
        return random_pair(gp, space, rng, candidates)
    a = _incumbent(gp, space, rng)
    return a, _other_than(a, _random_points(space, rng, 8))[0]


def eubo(gp: PreferenceGP, space: Space, rng: np.random.Generator,
         candidates: int) -> tuple[np.ndarray, np.ndarray]:
    if gp.model is None:
        return random_pair(gp, space, rng, candidates)
    from botorch.acquisition.preference import AnalyticExpectedUtilityOfBestOption
    from torch.quasirandom import SobolEngine

    a = _incumbent(gp, space, rng)
    n_local = max(1, int(candidates * LOCAL_SHARE))
    sobol = SobolEngine(space.dim, scramble=True, seed=int(rng.integers(2**31)))
    cand = np.concatenate([
        sobol.draw(candidates - n_local, dtype=DTYPE).numpy(),
        a + LOCAL_SCALE * rng.standard_normal((n_local, space.dim))])
    cand = _other_than(a, space.snap(cand))
    acq = AnalyticExpectedUtilityOfBestOption(
        pref_model=gp.model, previous_winner=torch.as_tensor(a, dtype=DTYPE)[None])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jitter added to a Cholesky factor: still a value
        values = acq(torch.as_tensor(cand, dtype=DTYPE)[:, None, :]).numpy()
    # Rounded before the argmax: values equal but for their last bits (which the order of
    # a threaded sum can change) must not make a rerun with the same seed pick another.
    return a, cand[int(np.argmax(np.round(values, 9)))]


STRATEGIES: dict[str, PairStrategy] = {
    "eubo": eubo,
    "incumbent-random": incumbent_random,
    "random": random_pair,
}


def make_pair_strategy(name: str) -> PairStrategy:
    """The strategy ``tune.strategy`` names; one ConfigError line otherwise."""
    what = "a pair strategy (gp, space, rng, candidates) -> (a, b)"
    fn: Callable = lookup(name, STRATEGIES, "tune.strategy", what)
    if not callable(fn):
        raise ConfigError(f"tune.strategy: {name!r} is a {type(fn).__name__}, not {what}")
    return fn
