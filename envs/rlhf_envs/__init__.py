"""Example environments for RLHF runs; importing this package registers them with gymnasium.

Registered ids (namespace ``rlhf_envs``):
    - ``rlhf_envs/Reach2D-v0``: point mass reaches a target around a hazard; Box obs.
    - ``rlhf_envs/Reach2DPixels-v0``: the same task, (64, 64, 3) uint8 image obs.
    - ``rlhf_envs/Reach2DDict-v0``: the same task, Dict obs.
    - ``rlhf_envs/HalfCheetahBackward-v0``: MuJoCo HalfCheetah whose intended behaviour
      (running backwards) is the opposite of its built-in forward reward.

``SCORES`` maps each id to the ``"module:function"`` of its per-step scoring function
``score(clip) -> (T,) float64`` for a simulated teacher. Entry points are strings, so importing
this package loads neither pygame nor MuJoCo.
"""

from __future__ import annotations

import gymnasium

REACH2D_HORIZON = 100
CHEETAH_HORIZON = 1000

_ENVS: dict[str, tuple[str, int, str]] = {
    # id: (entry point, max_episode_steps, score function)
    "rlhf_envs/Reach2D-v0": (
        "rlhf_envs.reach2d:Reach2DEnv",
        REACH2D_HORIZON,
        "rlhf_envs.reach2d:score",
    ),
    "rlhf_envs/Reach2DPixels-v0": (
        "rlhf_envs.reach2d:Reach2DPixelsEnv",
        REACH2D_HORIZON,
        "rlhf_envs.reach2d:score",
    ),
    "rlhf_envs/Reach2DDict-v0": (
        "rlhf_envs.reach2d:Reach2DDictEnv",
        REACH2D_HORIZON,
        "rlhf_envs.reach2d:score",
    ),
    "rlhf_envs/HalfCheetahBackward-v0": (
        "rlhf_envs.cheetah:HalfCheetahBackwardEnv",
        CHEETAH_HORIZON,
        "rlhf_envs.cheetah:score",
    ),
}

SCORES: dict[str, str] = {env_id: spec[2] for env_id, spec in _ENVS.items()}


def register_all() -> None:
    """Registers every env; idempotent, so re-importing or reloading does not warn."""
    for env_id, (entry_point, horizon, _score) in _ENVS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=horizon)


register_all()

__all__ = ["SCORES", "register_all"]
