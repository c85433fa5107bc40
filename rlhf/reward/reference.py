"""A per-member reference ensemble: M separate ``nn.Sequential`` MLPs, trained one after
another — the straightforward implementation. Used to check the batched ensemble's numbers
(tests) and as the baseline its speed is measured against (``scripts/benchmark.py reward``).
"""

from __future__ import annotations

import torch
from torch import nn

from rlhf.reward.network import EnsembleMLP


class ReferenceEnsemble(nn.Module):
    def __init__(self, batched: EnsembleMLP):
        super().__init__()
        self.members = nn.ModuleList()
        n_layers = len(batched.weights)
        for m in range(batched.members):
            layers: list[nn.Module] = []
            for i, (w, b) in enumerate(zip(batched.weights, batched.biases, strict=True)):
                linear = nn.Linear(w.shape[1], w.shape[2])
                with torch.no_grad():
                    linear.weight.copy_(w[m].T)
                    linear.bias.copy_(b[m, 0])
                layers.append(linear)
                if i < n_layers - 1:
                    layers.append(nn.LeakyReLU(0.01))
            self.members.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M, N, D) per-member inputs -> (M, N), one member at a time."""
        return torch.stack([member(x[m]).squeeze(-1) for m, member in enumerate(self.members)])


def reference_train_step(member: nn.Module, optimizer: torch.optim.Optimizer,
                         features: torch.Tensor, pairs: torch.Tensor, mu: torch.Tensor,
                         idx: torch.Tensor, eps: float = 0.1) -> float:
    """One Bradley-Terry step for one member: features (C, T, D), pairs (P, 2), mu (P,),
    idx (B,) pair indices of the minibatch."""
    x = features[pairs[idx]]  # (B, 2, T, D)
    r = member(x).squeeze(-1).sum(-1)  # (B, 2)
    p = eps / 2 + (1 - eps) * torch.sigmoid(r[:, 0] - r[:, 1])
    loss = nn.functional.binary_cross_entropy(p, mu[idx])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss)
