"""State replay reproduces the frames an env renders while it runs (rlhf/render.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import rlhf_envs  # noqa: F401  (registers the example envs)

from rlhf.clips import Clip
from rlhf.config import EnvConfig
from rlhf.environment import state_adapter
from rlhf.render import ClipRenderer, RenderError, StateReplay


def _record(env_id: str, steps: int, seed: int = 0, forward: bool = False,
            **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run an rgb_array env with random actions; states (T, S) before each step, the frames
    (T, H, W, 3) env.render() gave at the same moments, and the actions."""
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    adapter = state_adapter(env)
    states, frames, actions = [], [], []
    for _ in range(steps):
        states.append(adapter.get(env))
        if forward:  # bring derived kinematics up to date with qpos; changes no state
            import mujoco

            mujoco.mj_forward(env.unwrapped.model, env.unwrapped.data)
        frames.append(env.render())
        action = env.action_space.sample()
        actions.append(action)
        env.step(action)
    env.close()
    return np.stack(states), np.stack(frames), np.stack(actions)


def _clip(states: np.ndarray, frames: np.ndarray | None = None, with_states: bool = True,
          clip_id: int = 7) -> Clip:
    t = len(states)
    return Clip(obs=np.zeros((t, 1), np.float32), actions=np.zeros((t, 1), np.float32),
                rewards=np.zeros(t), dones=np.zeros(t, bool), last_obs=np.zeros(1, np.float32),
                states=states if with_states else None, frames=frames, id=clip_id)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1", "MountainCarContinuous-v0",
                                    "Acrobot-v1", "rlhf_envs/Reach2D-v0"])
def test_classic_control_and_custom_replay_is_pixel_identical(env_id):
    states, frames, _ = _record(env_id, steps=12)
    # A different reset seed: every pixel must come from the stored states alone.
    renderer = ClipRenderer(EnvConfig(id=env_id), seed=123)
    try:
        replayed = renderer.frames(_clip(states))
    finally:
        renderer.close()
    assert replayed.shape == frames.shape and replayed.dtype == np.uint8
    assert np.array_equal(replayed, frames)
    assert len({f.tobytes() for f in frames}) > 1  # the clip really moves


def test_mujoco_replay_matches_collection(monkeypatch):
    env_id = "HalfCheetah-v5"
    kwargs = {"width": 160, "height": 120}  # small frames: CPU rendering is slow
    states, exact, _ = _record(env_id, steps=6, forward=True, **kwargs)
    _, raw, _ = _record(env_id, steps=6, **kwargs)
    renderer = ClipRenderer(EnvConfig(id=env_id, kwargs=kwargs), seed=5)
    try:
        replayed = renderer.frames(_clip(states)).astype(int)
    finally:
        renderer.close()
    # With the kinematics of each stored qpos computed, frames are identical up to GL
    # rounding.
    assert np.abs(replayed - exact).max() <= 2
    # env.render() right after a step draws body positions from before the step's last
    # substep (mj_step computes them before integrating): a small, known difference.
    diff = np.abs(replayed - raw.astype(int))
    assert diff.mean() < 3.0
    assert (diff.max(axis=-1) > 16).mean() < 0.08


def test_stored_frames_are_the_fallback_and_no_data_is_a_clear_error():
    frames = np.random.default_rng(0).integers(0, 255, (3, 8, 10, 3), dtype=np.uint8)
    renderer = ClipRenderer(EnvConfig(id="Pendulum-v1"))
    try:
        states = np.zeros((3, 3))
        got = renderer.frames(_clip(states, frames, with_states=False))
        assert np.array_equal(got, frames)
        with pytest.raises(RenderError, match="clip 7 has neither env states nor frames"):
            renderer.frames(_clip(states, with_states=False))
    finally:
        renderer.close()


def test_a_state_that_does_not_fit_the_env_says_so():
    replay = StateReplay(EnvConfig(id="rlhf_envs/Reach2D-v0"))
    try:
        with pytest.raises(RenderError, match=r"stored state \(4 values\) does not fit"):
            replay.frame(np.zeros(4))
    finally:
        replay.close()


def test_fps_is_the_envs_own():
    for env_id, fps in [("Pendulum-v1", 30), ("CartPole-v1", 50)]:
        renderer = ClipRenderer(EnvConfig(id=env_id))
        assert renderer.fps == fps
        renderer.close()
