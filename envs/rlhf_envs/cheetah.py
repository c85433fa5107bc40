"""HalfCheetahBackward: the MuJoCo HalfCheetah whose intended behaviour is running *backwards*.

Intended behaviour
    Run to the left (negative x) quickly and with modest effort. The env's own reward is left
    unchanged from HalfCheetah-v5 (forward velocity minus control cost), so it rewards the
    opposite of what is wanted: an agent trained on it runs the wrong way. Only preferences
    (from a person, or from ``score`` below as a simulated teacher) define the real goal, which
    makes this env a check that a learned reward really replaces the built-in one.

Why it suits learning from preferences
    "Is it running backwards, and briskly?" is instant to judge from a clip, and a person
    would also reject a cheetah that moves left by flipping onto its back and wriggling, a
    loophole a velocity-only reward does not close. ``score`` is the velocity-only proxy.

Spaces (as HalfCheetah-v5): observation Box(17,) float64 (qpos without rootx, then qvel),
action Box(-1, 1, (6,), float32). Never terminates; 1000-step episodes via registration.

State layout (what the core's MuJoCo adapter captures; this class deliberately does not
override ``MujocoEnv.set_state(qpos, qvel)``):
    state = concatenate(data.qpos, data.qvel), shape (18,) float64
    state[0:9]  = qpos: rootx, rootz, rooty, bthigh, bshin, bfoot, fthigh, fshin, ffoot
    state[9:18] = qvel: the same joints' velocities; state[9] is the rootx velocity (m/s).

Rendering differs from HalfCheetah-v5 in two ways, both so that a frame is a function of the
state alone (needed to re-render a clip from saved states):
    - the default camera is the model's ``track`` camera (follows the centre of mass), not
      v5's free camera, whose look-at point is frozen wherever the body was at the first
      render and which loses the cheetah once it runs off;
    - ``render`` first runs ``mj_forward``: after ``mj_step`` the body poses in ``data`` lag
      ``qpos`` by one physics substep, whereas ``MujocoEnv.set_state`` recomputes them, so
      without it a frame rendered during a rollout differs from the frame after restoring the
      same qpos/qvel. ``mj_forward`` leaves qpos, qvel and the solver warm start untouched,
      so rendering does not change the dynamics.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

NQ = 9
NV = 9
STATE_SIZE = NQ + NV
ROOTX_VEL = NQ  # index of the rootx velocity in the state vector
# HalfCheetah-v5 defaults; ``score`` charges the same control cost as the built-in reward.
CTRL_COST_WEIGHT = 0.1
FORWARD_REWARD_WEIGHT = 1.0


def score(clip: Any) -> np.ndarray:
    """Per-step score of running backwards: -(rootx velocity) - CTRL_COST_WEIGHT * |a|^2.

    Args:
        clip: object with ``actions`` (T, 6), ``rewards`` (T,) the env's forward reward, and
            ``states`` (T, 18) = concatenate(qpos, qvel) taken before each step's action, or
            None.

    Returns:
        (T,) float64. With states, the velocity is the rootx velocity of the state shown at
        step t (``states[t, 9]``). Without states it falls back to the velocity implied by the
        env reward (x_velocity = reward + ctrl_cost, valid for the default weights), which is
        the velocity over the step rather than at its start.
    """
    actions = np.asarray(clip.actions, dtype=np.float64)
    ctrl = CTRL_COST_WEIGHT * np.sum(np.square(actions.reshape(len(actions), -1)), axis=1)
    states = getattr(clip, "states", None)
    if states is not None:
        x_velocity = np.asarray(states, dtype=np.float64)[:, ROOTX_VEL]
    else:
        rewards = np.asarray(clip.rewards, dtype=np.float64).reshape(-1)
        x_velocity = (rewards + ctrl) / FORWARD_REWARD_WEIGHT
    return -x_velocity - ctrl


class HalfCheetahBackwardEnv(HalfCheetahEnv):
    """HalfCheetah-v5 with a state-determined camera; intended behaviour: run backwards.

    Accepts every HalfCheetah-v5 argument. ``camera_name`` defaults to the tracking camera
    ``"track"``; passing ``camera_id`` selects that camera instead.
    """

    def __init__(self, *args: Any, camera_name: str | None = "track", **kwargs: Any) -> None:
        # The renderer rejects camera_id and camera_name together.
        if kwargs.get("camera_id") is not None:
            camera_name = None
        super().__init__(*args, camera_name=camera_name, **kwargs)

    def render(self) -> Any:
        # See module docstring: make body poses match qpos so frames depend on state alone.
        mujoco.mj_forward(self.model, self.data)
        return super().render()
