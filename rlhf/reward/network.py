"""Ensemble networks as one batched computation.

Member weights are stacked on a leading axis: layer l holds ``weight`` (M, in, out) and
``bias`` (M, 1, out), and one ``baddbmm`` evaluates every member on its own inputs. On a
CPU this replaces M small matmuls (and M Python round trips) with one large one; on a GPU
it is one kernel launch per layer for the whole ensemble.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

LEAKY_SLOPE = 0.01
"""The negative slope of every hidden activation of the reward networks (leaky ReLU)."""


class EnsembleMLP(nn.Module):
    """M independent MLPs ``D -> hidden... -> 1`` evaluated in one batched pass.

    Each member is initialised like ``nn.Linear`` (uniform in +-1/sqrt(fan_in)), with its own
    draws from ``generator``.
    """

    def __init__(self, members: int, in_dim: int, hidden: list[int],
                 generator: torch.Generator | None = None):
        super().__init__()
        self.members, self.in_dim, self.hidden = members, in_dim, list(hidden)
        dims = [in_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(members, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(members, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, x: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """x: (M, N, D) per-member inputs, or (N, D) shared by all members. Returns (M, N).

        ``members`` evaluates only that slice of the ensemble (M is then its length); the
        trainer uses it to fit a large ensemble in groups whose activations stay in cache.
        """
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            w, b = w[members], b[members]
            if x.dim() == 2:  # shared inputs: broadcast instead of copying them M times
                x = torch.matmul(x, w) + b
            else:
                x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.nn.functional.leaky_relu(x, LEAKY_SLOPE)
        return x.squeeze(-1)

    def l2(self) -> torch.Tensor:
        """(M,) sum of squared weights of each member (biases excluded)."""
        return sum(w.pow(2).sum(dim=(1, 2)) for w in self.weights)

    def flops_per_input(self) -> int:
        """Forward multiply-adds x2 for one member on one input."""
        dims = [self.in_dim, *self.hidden, 1]
        return sum(2 * a * b for a, b in itertools.pairwise(dims))
