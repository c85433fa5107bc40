"""The person's hidden utility over the parameters: BoTorch's ``PairwiseGP`` (a GP with a
probit likelihood of pairwise choices, Chu & Ghahramani 2005) fitted by its Laplace
marginal likelihood.

The GP works on the unit cube (``rlhf.tune.space.Space``). Ties are dropped (the probit
likelihood has no tie outcome) and skips are never trained on; both are counted.

Hyperparameter fits cost a good part of a second; updating the posterior with one new
comparison at fixed hyperparameters costs milliseconds. So the hyperparameters used with
``m`` comparisons are fitted on the first ``fitted_on(m)`` of them only (every comparison
while there are few, then every ``fit_every``), always starting from the same initial
values with the same seed: the model at ``m`` is a function of the labels alone (same seed,
same pairs; a resumed run refits exactly what it had). ``fitted_on(m) < m``, so the tuner
can fit the hyperparameters the next pair will need while a person watches this one.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from rlhf.store import Store, StoreError
from rlhf.tune.space import Space

DTYPE = torch.float64  # BoTorch's recommendation for GPs: float32 Cholesky factors fail


@dataclass(frozen=True)
class Comparisons:
    """A tuning run's labels, as the GP sees them.

    Attributes:
        points: (n, d) unit-cube parameter vectors, unique, in the order first shown.
        pairs: (m, 2) int64 indices into ``points``: [winner, loser], in label order.
        ties: labels 'equal' (dropped). skips: labels 'skip' (never trained on).
        clip_point: clip id -> index into ``points``.
    """

    points: np.ndarray
    pairs: np.ndarray
    ties: int
    skips: int
    clip_point: dict[int, int]

    @property
    def m(self) -> int:
        return len(self.pairs)


def read_comparisons(store: Store, space: Space) -> Comparisons:
    """The store's candidate clips and labels as unit-cube points and [winner, loser]."""
    params = store.candidate_params()
    clip_point: dict[int, int] = {}
    keys: dict[tuple[float, ...], int] = {}
    points: list[np.ndarray] = []
    for cid in sorted(params):
        try:
            x = np.array([[float(params[cid][n]) for n in space.names]])
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{store.path}: clip {cid} was made with parameters "
                             f"{sorted(params[cid])}, not this config's {space.names}: the "
                             "run's tune.params were changed; start a new run") from None
        u = space.to_unit(x)[0]
        key = tuple(np.round(u, 9))
        if key not in keys:
            keys[key] = len(points)
            points.append(u)
        clip_point[cid] = keys[key]
    pairs_ids, mu = store.preferences()
    pairs: list[tuple[int, int]] = []
    ties = 0
    for (a, b), target in zip(pairs_ids.tolist(), mu.tolist(), strict=True):
        if a not in clip_point or b not in clip_point:
            raise StoreError(f"{store.path}: a label compares clips {a} and {b}, which are not "
                             "a tuning run's candidates")
        pa, pb = clip_point[a], clip_point[b]
        if target == 0.5 or pa == pb:
            ties += 1
            continue
        pairs.append((pa, pb) if target > 0.5 else (pb, pa))
    skips = store.counts().skipped
    d = space.dim
    return Comparisons(np.array(points, dtype=np.float64).reshape(-1, d),
                       np.array(pairs, dtype=np.int64).reshape(-1, 2), ties, skips, clip_point)


def fitted_on(m: int, fit_every: int) -> int:
    """How many of the first comparisons the hyperparameters used with ``m`` are fitted on
    (0: the kernel's initial values). Always < m, so it is known a comparison early."""
    if m <= 1:
        return 0
    if m <= 2 * fit_every:
        return m - 1
    return ((m - 1) // fit_every) * fit_every


def previous_fit(m_fit: int, fit_every: int) -> int:
    """The fit before the one on ``m_fit`` comparisons in the chain of fits (0: none)."""
    if m_fit <= 2 * fit_every:
        return m_fit - 1
    return m_fit - fit_every


MAX_ITER = 50
HYPER_DIGITS = 4
"""Decimals kept of each fitted raw hyperparameter (ample: they are log-scale values)."""
"""L-BFGS iterations per hyperparameter fit at most (a warm start needs far fewer)."""


class PreferenceGP:
    """``PairwiseGP`` on a run's comparisons, with hyperparameter fits cached by the number
    of comparisons they were fitted on. ``seed``: the fits' torch seed."""

    def __init__(self, fit_every: int = 5, seed: int = 0):
        self.fit_every = fit_every
        self.seed = seed
        self._fits: dict[str, dict[str, torch.Tensor]] = {}
        self.model = None
        self.data: Comparisons | None = None

    def hyperparameters(self, data: Comparisons, m_fit: int) -> dict[str, torch.Tensor]:
        """The kernel's hyperparameters fitted on the first ``m_fit`` comparisons of
        ``data``: each fit starts where the previous one in the chain ``fit_points``
        ended (a few L-BFGS steps instead of fifty), so fits are cached by the exact
        comparisons they saw; an undone label changes the key and the chain is redone."""
        if m_fit == 0:
            return {}  # nothing to fit on: the kernel keeps its initial values
        pairs = data.pairs[:m_fit]
        # Only the points these comparisons involve, in the order they first appear: the fit
        # is then the same whenever it is made (ahead of time, or again after a resume).
        used = list(dict.fromkeys(pairs.reshape(-1).tolist()))
        remap = {p: i for i, p in enumerate(used)}
        points = data.points[used]
        local = np.vectorize(remap.__getitem__, otypes=[np.int64])(pairs)
        key = hashlib.sha256(points.tobytes() + local.tobytes()).hexdigest()
        if key in self._fits:
            return self._fits[key]
        start = self.hyperparameters(data, previous_fit(m_fit, self.fit_every))
        from botorch.exceptions.errors import ModelFittingError
        from botorch.fit import fit_gpytorch_mll
        from botorch.models.pairwise_gp import PairwiseLaplaceMarginalLogLikelihood

        model = self._new(points, local)
        if start:
            model.load_state_dict(start, strict=False)
        with torch.random.fork_rng(), warnings.catch_warnings():
            torch.manual_seed(self.seed)
            # A fit that stops early is still a fit; its warnings are not the user's to act
            # on.
            warnings.simplefilter("ignore")
            try:
                fit_gpytorch_mll(PairwiseLaplaceMarginalLogLikelihood(model.likelihood, model),
                                 optimizer_kwargs={"options": {"maxiter": MAX_ITER}})
            except ModelFittingError:
                # Every attempt failed (a non-finite likelihood on a degenerate set of
                # comparisons): keep the hyperparameters the chain had; the next fit retries.
                self._fits[key] = start
                return start
        # Rounded: the fit's last digits vary with the order of floating-point sums (BLAS
        # kernels pick theirs by memory alignment), and the optimiser would carry that into
        # the next pair; a seed must give the same pairs.
        state = {k: torch.round(v.detach(), decimals=HYPER_DIGITS)
                 if v.is_floating_point() else v.detach().clone()
                 for k, v in model.state_dict().items()
                 if k.startswith(("covar_module.", "mean_module."))}
        self._fits[key] = state
        return state

    def prepare(self, data: Comparisons, m_next: int) -> None:
        """Fit, ahead of time, the hyperparameters ``m_next`` comparisons will use."""
        self.hyperparameters(data, fitted_on(m_next, self.fit_every))

    def update(self, data: Comparisons) -> None:
        """The posterior given every comparison in ``data`` (None while there are none)."""
        self.data = data
        if data.m == 0:
            self.model = None
            return
        state = self.hyperparameters(data, fitted_on(data.m, self.fit_every))
        model = self._new(data.points, data.pairs)
        if state:
            model.load_state_dict(state, strict=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # With the loaded hyperparameters: the posterior's mode (the Laplace fit) again.
            model.set_train_data(model.datapoints, model.comparisons, update_model=True)
        model.eval()
        self.model = model

    @staticmethod
    def _new(points: np.ndarray, pairs: np.ndarray):  # -> PairwiseGP
        from botorch.models.pairwise_gp import PairwiseGP

        comparisons = torch.as_tensor(pairs, dtype=torch.long) if len(pairs) else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PairwiseGP(torch.as_tensor(points, dtype=DTYPE) if len(pairs) else None,
                              comparisons)

    @torch.no_grad()
    def utility(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std (N,) of the latent utility at unit-cube points (N, d);
        zeros and ones (the prior) before any comparison. The scale is the model's own."""
        u = np.asarray(u, dtype=np.float64).reshape(len(u), -1)
        if self.model is None:
            return np.zeros(len(u)), np.ones(len(u))
        post = self.model.posterior(torch.as_tensor(u, dtype=DTYPE))
        mean = post.mean.reshape(-1).numpy()
        std = post.variance.clamp_min(0).sqrt().reshape(-1).numpy()
        return mean.copy(), std.copy()

    def incumbent(self) -> int | None:
        """Index into ``data.points`` of the point of highest posterior mean among those
        seen (None before any candidate)."""
        if self.data is None or not len(self.data.points):
            return None
        mean, _ = self.utility(self.data.points)
        return int(np.argmax(mean))
