"""When things happen in a run: labels per iteration, where iterations end, which ones
evaluate. Pure functions of the config's numbers, shared by the loop and the benchmarks.

>>> label_schedule(total=100, initial_fraction=0.25, iterations=3, decay=1.0)
[25, 41, 20, 14]
>>> iteration_ends(total_timesteps=1000, rollout_size=100, iterations=4)
[0, 200, 500, 700, 1000]
"""

from __future__ import annotations

import numpy as np


def label_schedule(total: int, initial_fraction: float, iterations: int,
                   decay: float) -> list[int]:
    """Labels to ask at the start and at each iteration: [initial, it_1, ..., it_n].

    Iteration i gets a share proportional to 1 / (1 + decay * i) (Christiano's rate falls
    roughly as 1/t); integer counts that sum exactly to ``total``.
    """
    initial = min(total, max(1, round(total * initial_fraction)))
    rest = total - initial
    w = 1.0 / (1.0 + decay * np.arange(iterations))
    share = rest * w / w.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: rest - counts.sum()]:
        counts[i] += 1
    return [initial, *counts.tolist()]


def iteration_ends(total_timesteps: int, rollout_size: int, iterations: int) -> list[int]:
    """The agent's timestep count at the end of each iteration (index 0: before the first):
    whole rollouts per iteration, spread evenly, never past the timestep budget."""
    rollouts = max(1, total_timesteps // rollout_size)
    return [(i * rollouts) // iterations * rollout_size for i in range(iterations + 1)]


def eval_iterations(iterations: int, every: int) -> list[int]:
    """The iterations after which the loop evaluates the policy (always the last)."""
    return [it for it in range(1, iterations + 1)
            if it == iterations or (every and it % every == 0)]
