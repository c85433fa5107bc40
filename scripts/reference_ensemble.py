"""A per-member reference ensemble: M separate ``nn.Sequential`` MLPs, trained one after
another — the straightforward implementation. Used to check the batched ensemble's numbers
(tests) and as the baselines its speed is measured against (``scripts/benchmark.py reward``):

- ``reference_train_step``: one member's step with the minibatch's pairs batched (a strong
  baseline: only the loop over members remains);
- ``reference_pair_loop_step``: the same step with a Python loop over the pairs, two forward
  calls per pair, the way the most used peer library's preference trainer computes its loss.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhf.reward.network import LEAKY_SLOPE, EnsembleMLP


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
                    layers.append(nn.LeakyReLU(LEAKY_SLOPE))
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
    return _step(optimizer, nn.functional.binary_cross_entropy(p, mu[idx]))


def reference_pair_loop_step(member: nn.Module, optimizer: torch.optim.Optimizer,
                             features: torch.Tensor, pairs: torch.Tensor, mu: torch.Tensor,
                             idx: torch.Tensor, eps: float = 0.1) -> float:
    """``reference_train_step`` computed pair by pair: for each of the B pairs, the return
    of each clip (T, D) -> scalar from its own forward call, then one loss and one step."""
    probs = []
    for a, b in pairs[idx].tolist():
        r_a = member(features[a]).sum()
        r_b = member(features[b]).sum()
        probs.append(eps / 2 + (1 - eps) * torch.sigmoid(r_a - r_b))
    return _step(optimizer, nn.functional.binary_cross_entropy(torch.stack(probs), mu[idx]))


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
