#!/usr/bin/env python
"""Teach an agent something its environment does not reward: a scoring function as teacher.

Pendulum-v1's own reward asks for the pole upright. Here the simulated teacher prefers
clips where the pole spins fast counter-clockwise instead, and a disagreement-free random
query strategy is swapped in. The reward model only ever sees the teacher's answers.

    python scripts/train_custom_score.py [key.path=value ...]
"""

import sys
from pathlib import Path

import numpy as np

from rlhf import load_config, run
from rlhf.clips import Clip
from rlhf.queries import RandomQueries


def spin_score(clip: Clip) -> np.ndarray:
    """(T,) per-step score: angular velocity, the third observation of Pendulum-v1."""
    return clip.obs[:, 2].astype(np.float64)


cfg = load_config(Path(__file__).parent.parent / "configs/pendulum.yaml", sys.argv[1:])
result = run(cfg, score=spin_score, strategy=RandomQueries())
print(f"labels {result.labels}; env's own return {result.final_return:.1f} (not the goal here); "
      f"run in {result.run_dir}")
