"""Temporal-crop augmentation of labelled pairs (SURF, Park et al. 2022).

A label says which of two clips is better over their whole length; it says nearly as much
about slightly shorter windows of them. Each training step therefore scores every pair on
random sub-windows: one window length per pair, drawn from ``[T - crop, T]`` and shared by
both clips (so neither side is summed over more steps than the other), and an independent
start in each clip. The labels and the stored clips are never changed; evaluation and
screening always use whole clips.
"""

from __future__ import annotations

import torch


def crop_mask(shape: tuple[int, int], clip_length: int, crop: int,
              gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(M, B, 2, T) bool: which steps of each clip of each pair a training step sums.

    ``shape``: (members, pairs per member). Per pair a window length ``T - c`` with c
    uniform in [0, crop] (the same for both clips), per clip a start uniform in [0, c].
    """
    m, b = shape
    t = clip_length
    crop = min(crop, t - 1)  # at least one step stays
    cut = torch.randint(crop + 1, (m, b, 1), generator=gen, device=device)
    start = (torch.rand((m, b, 2), generator=gen, device=device) * (cut + 1)).floor().long()
    steps = torch.arange(t, device=device)
    start = start.unsqueeze(-1)
    return (steps >= start) & (steps < start + (t - cut).unsqueeze(-1))
