"""A swing-up controller for ``Pendulum-v1`` with four gains, for preferential Bayesian
optimisation (``rlhf tune configs/tune_pendulum.yaml``).

Parameters (``controller(params)``)
    energy_gain  how hard it pumps energy while swinging up (0.05 .. 5, log)
    kp, kd       the PD gains that catch and hold it upright (1 .. 30 and 0.1 .. 5, log)
    catch_angle  how far from upright (radians) the PD catch takes over (0.1 .. 1.2)

How it swings: away from the top, an energy-pumping law: with ``E = θ̇²/2 + 15 cos θ``
(Pendulum-v1's dynamics: ``θ̈ = 15 sin θ + 3u``, so ``dE/dt = 3uθ̇``), the torque is
``energy_gain · (15 − E) · sign(θ̇)``, which drives ``E`` to the upright's energy. Within
``catch_angle`` of the top, ``u = −kp·θ − kd·θ̇``. Both are clipped to the env's ±2.

The utility is the env's own reward (upright, still, little torque): the simulated teacher
needs no score of its own. Too little pumping never gets up, too much overshoots the catch;
a soft catch lets it fall through, a stiff one with little damping oscillates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_TORQUE = 2.0
TOP_ENERGY = 15.0  # 3g/2l with g = 10, l = 1: the energy at rest upright, E = θ̇²/2 + 15 cos θ


def controller(params: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """A policy (obs (3,) = cos θ, sin θ, θ̇ -> action (1,)) with these gains."""
    k_e = float(params["energy_gain"])
    kp, kd = float(params["kp"]), float(params["kd"])
    catch = float(params["catch_angle"])

    def policy(obs: np.ndarray) -> np.ndarray:
        cos, sin, omega = float(obs[0]), float(obs[1]), float(obs[2])
        theta = math.atan2(sin, cos)  # 0 upright, in (-pi, pi]
        if abs(theta) < catch:
            u = -kp * theta - kd * omega
        else:
            energy = 0.5 * omega * omega + TOP_ENERGY * cos
            # sign(0) would stall at the bottom: a push in either direction starts the swing.
            u = k_e * (TOP_ENERGY - energy) * (1.0 if omega >= 0 else -1.0)
        return np.array([min(MAX_TORQUE, max(-MAX_TORQUE, u))], dtype=np.float32)

    return policy
