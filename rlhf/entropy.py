"""PEBBLE's unsupervised pre-training reward: the k-nearest-neighbour state-entropy bonus
and the running standard deviation that scales it. Pure array maths, apart from the replay
buffer it is usually fed from (``rlhf.agents.EntropyBonus``).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def knn_state_entropy(states: np.ndarray | torch.Tensor,
                      reference: np.ndarray | torch.Tensor | None = None, *, k: int = 5,
                      states_in_reference: bool = False, c: float | None = 1.0,
                      chunk: int = 2048,
                      device: str | torch.device | None = None) -> np.ndarray:
    """The particle-based state-entropy bonus of PEBBLE (Lee et al. 2021) / APT (Liu & Abbeel
    2021) for states (N, *shape) (flattened to (N, D)) -> (N,) float32.

    Each state's Euclidean distance d_k to its k-th nearest neighbour, returned as
    ``log(c + d_k)`` (APT's form; the log keeps far-flung states from dominating), or d_k
    itself with ``c=None`` (PEBBLE's code, which then divides by a running std:
    ``RunningStd``).

    Where the neighbours come from: with ``reference=None``, the other states of the batch
    (each state's own row is excluded by index; an exact duplicate still counts, at distance
    0, so repeated states score low). With ``reference`` (R, *shape), e.g. a sample of the
    replay buffer, its rows; when the states were drawn from it (PEBBLE: a minibatch against
    the whole buffer), pass ``states_in_reference=True`` to skip each state's own zero
    distance (the (k+1)-th smallest is taken).

    Distances are computed in (chunk x chunk) blocks, keeping only the k smallest per state
    between blocks, so memory stays at a few chunk**2 floats (16 MB each at 2048) for any
    N and R; exact (no |a|^2 + |b|^2 - 2ab cancellation), so the chunk size does not change
    the result. ``device``: where to compute (default: the states' own).
    """
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be >= 1, got k={k}, chunk={chunk}")
    if c is not None and not c > 0:
        raise ValueError(f"c must be > 0 (log(c + 0) for duplicate states), got {c}")
    if device is None:
        device = states.device if isinstance(states, torch.Tensor) else "cpu"
    x = _flat_rows(states, device)
    ref = x if reference is None else _flat_rows(reference, device)
    if ref.shape[1] != x.shape[1]:
        raise ValueError(f"states have {x.shape[1]} numbers each, the reference "
                         f"{ref.shape[1]}")
    kth = k + int(reference is not None and states_in_reference)
    available = len(ref) - int(reference is None)
    if kth > available:
        raise ValueError(f"k={k} needs at least {kth} neighbours, there are {available}")
    out = torch.empty(len(x), dtype=torch.float32, device=device)
    with torch.no_grad():
        for qs in range(0, len(x), chunk):
            q = x[qs:qs + chunk]
            best: torch.Tensor | None = None  # (q, <= kth) smallest distances so far
            for rs in range(0, len(ref), chunk):
                d = torch.cdist(q, ref[rs:rs + chunk],
                                compute_mode="donot_use_mm_for_euclid_dist")
                lo, hi = max(qs, rs), min(qs + len(q), rs + d.shape[1])
                if reference is None and lo < hi:  # blocks sharing rows: not one's own neighbour
                    own = torch.arange(lo, hi, device=device)
                    d[own - qs, own - rs] = math.inf
                both = d if best is None else torch.cat([best, d], dim=1)
                best = both.topk(min(kth, both.shape[1]), dim=1, largest=False).values
            assert best is not None
            out[qs:qs + len(q)] = best[:, kth - 1]
        if c is not None:
            out = torch.log(c + out)
    return out.cpu().numpy()


def _flat_rows(a: np.ndarray | torch.Tensor, device: str | torch.device) -> torch.Tensor:
    t = torch.as_tensor(a).to(device=device, dtype=torch.float32)
    return t.reshape(len(t), -1)


class RunningStd:
    """Running mean and standard deviation of a stream of scalars (Chan et al.'s parallel
    update, in float64), for PEBBLE's normalised intrinsic reward ``r / std``: PEBBLE updates
    it with each batch's bonus and then divides that batch by the updated std (no centring,
    so the bonus keeps its sign and order).

    Starts empty (std 1: the first batch passes through unscaled until it is counted).
    ``count``, ``mean`` and ``m2`` (sum of squared deviations) are its whole state.
    """

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        """Count a batch of values (any shape)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if len(x) == 0:
            return
        n, mean = len(x), float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population std of everything counted (1.0 before anything is)."""
        return math.sqrt(self.m2 / self.count) if self.count else 1.0

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """x / std, float32; a stream of identical values (std 0) is left unscaled."""
        std = self.std
        return (np.asarray(x, dtype=np.float32) / np.float32(std if std > 1e-8 else 1.0))
