#!/usr/bin/env python
"""Train Pendulum-v1 from 200 simulated labels, with a slightly irrational teacher.

The Python API in ten lines: load a preset, swap a component, run the loop.

    python scripts/train_pendulum.py                       # the full preset, a few minutes
    python scripts/train_pendulum.py loop.total_timesteps=4096 run_dir=/tmp/p   # overrides
"""

import sys
from pathlib import Path

import numpy as np

from rlhf import load_config, run
from rlhf.teachers import SimulatedTeacher

cfg = load_config(Path(__file__).parent.parent / "configs/pendulum.yaml", sys.argv[1:])
# B-Pref-style teacher: Boltzmann-rational (beta=1 per unit of return) and wrong 5% of the time.
teacher = SimulatedTeacher(beta=1.0, mistake=0.05, rng=np.random.default_rng(cfg.seed),
                           name="bpref")
result = run(cfg, teacher=teacher)
print(f"true return {result.final_return:.1f} after {result.labels} labels; {result.run_dir}")
