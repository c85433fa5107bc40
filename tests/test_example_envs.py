"""Tests of the example envs in ``envs/rlhf_envs``: API, restorable state, determinism, scores."""

from __future__ import annotations

import os
import sys

# Headless defaults; both must be set before pygame / mujoco are imported.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import importlib
import warnings
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import rlhf_envs
from gymnasium.utils.env_checker import check_env
from rlhf_envs import cheetah, reach2d

REACH_IDS = ["rlhf_envs/Reach2D-v0", "rlhf_envs/Reach2DPixels-v0", "rlhf_envs/Reach2DDict-v0"]
CHEETAH_ID = "rlhf_envs/HalfCheetahBackward-v0"


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch) -> None:
    # MuJoCo 4 warns about the stock half_cheetah.xml (settotalmass) and appends every warning
    # to ./MUJOCO_LOG.TXT; keep that out of the repository.
    monkeypatch.chdir(tmp_path)


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _actions(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, dim)).astype(np.float32)


def _clip(states, actions, rewards=None) -> SimpleNamespace:
    states = None if states is None else np.asarray(states, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float32)
    if rewards is None:
        rewards = np.zeros(len(actions))
    return SimpleNamespace(obs=None, actions=actions, rewards=np.asarray(rewards), states=states)


# --- registration --------------------------------------------------------------------


def test_every_env_is_registered_with_a_resolvable_score() -> None:
    ours = {k for k in gym.registry if k.startswith("rlhf_envs/")}
    assert ours == set(rlhf_envs.SCORES)
    for env_id, target in rlhf_envs.SCORES.items():
        assert callable(_resolve(target)), env_id
        spec = gym.spec(env_id)
        assert spec.max_episode_steps is not None and spec.max_episode_steps > 0


def test_register_all_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rlhf_envs.register_all()


# --- Reach2D family: API ------------------------------------------------------------


@pytest.mark.parametrize("env_id", REACH_IDS)
def test_reach_passes_env_checker(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Includes the render checks: each declared mode, "human" through SDL's dummy driver.
        check_env(env.unwrapped)
    relevant = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not relevant, [str(w.message) for w in relevant]
    env.close()


@pytest.mark.parametrize("env_id", REACH_IDS)
def test_reach_fixed_horizon_never_terminates(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    for t, action in enumerate(_actions(100, 2, seed=1)):
        _, reward, terminated, truncated, _ = env.step(action)
        assert not terminated
        assert truncated == (t == 99)
        assert np.isfinite(reward)
    env.close()


@pytest.mark.parametrize("env_id", REACH_IDS)
def test_reach_observations_stay_in_space(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=2)
    # Full thrust into a corner: exercises the speed limit and the walls.
    for _ in range(60):
        obs, *_ = env.step(np.array([1.0, -1.0], dtype=np.float32))
        assert env.observation_space.contains(obs)
    env.close()


def test_dict_obs_flattens_to_the_box_obs_in_sorted_key_order() -> None:
    box_env, dict_env = gym.make(REACH_IDS[0]), gym.make(REACH_IDS[2])
    box_obs, _ = box_env.reset(seed=4)
    dict_obs, _ = dict_env.reset(seed=4)
    flat = gym.spaces.flatten(dict_env.observation_space, dict_obs)
    # agent(4), hazard(4), target(3)
    np.testing.assert_array_equal(flat, box_obs[[0, 1, 2, 3, 6, 7, 8, 10, 4, 5, 9]])


def test_pixel_obs_is_the_scene_at_obs_size() -> None:
    env = gym.make(REACH_IDS[1], render_mode="rgb_array", render_size=64)
    obs, _ = env.reset(seed=5)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs, env.render())
    env.close()


# --- Reach2D family: restorable state and determinism --------------------------------


@pytest.mark.parametrize("env_id", REACH_IDS)
def test_reach_state_round_trip_reproduces_frames_and_dynamics(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    base = env.unwrapped
    env.reset(seed=7)
    for action in _actions(15, 2, seed=8):
        env.step(action)
    state = base.get_state()
    assert state.shape == (reach2d.STATE_SIZE,) and state.dtype == np.float64
    frame = env.render()
    future = _actions(10, 2, seed=9)
    expected = [env.step(a) for a in future]

    for a in _actions(20, 2, seed=10):  # wander off, then come back
        env.step(a)
    assert not np.array_equal(env.render(), frame)
    base.set_state(state)
    np.testing.assert_array_equal(env.render(), frame)
    np.testing.assert_array_equal(base.get_state(), state)
    replay = [env.step(a) for a in future]
    for (o1, r1, *_), (o2, r2, *_) in zip(expected, replay, strict=True):
        assert r1 == r2
        np.testing.assert_array_equal(
            gym.spaces.flatten(env.observation_space, o1),
            gym.spaces.flatten(env.observation_space, o2),
        )

    # A fresh env that was never reset can be put into the state and shows the same frame.
    fresh = gym.make(env_id, render_mode="rgb_array").unwrapped
    fresh.set_state(state)
    np.testing.assert_array_equal(fresh.render(), frame)
    env.close()
    fresh.close()


def test_reach_set_state_rejects_bad_vectors() -> None:
    env = gym.make(REACH_IDS[0]).unwrapped
    with pytest.raises(ValueError):
        env.set_state(np.zeros(8))
    with pytest.raises(ValueError):
        env.set_state(np.full(9, np.nan))
    with pytest.raises(ValueError):
        env.set_state(np.zeros(9))  # zero hazard radius


@pytest.mark.parametrize("env_id", REACH_IDS)
def test_reach_same_seed_same_episode(env_id: str) -> None:
    def rollout(seed: int) -> tuple[np.ndarray, list[float]]:
        env = gym.make(env_id)
        env.reset(seed=seed)
        states, rewards = [], []
        for a in _actions(20, 2, seed=3):
            states.append(env.unwrapped.get_state())
            rewards.append(env.step(a)[1])
        env.close()
        return np.stack(states), rewards

    s1, r1 = rollout(11)
    s2, r2 = rollout(11)
    s3, _ = rollout(12)
    np.testing.assert_array_equal(s1, s2)
    assert r1 == r2
    assert not np.array_equal(s1[0], s3[0])  # the seed really changes the layout


def test_reach_layouts_are_valid() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        sx, sy, vx, vy, gx, gy, hx, hy, hr = reach2d.sample_layout(rng)
        assert vx == vy == 0.0
        assert np.hypot(gx - sx, gy - sy) >= 0.8
        assert np.hypot(hx - gx, hy - gy) > hr and np.hypot(hx - sx, hy - sy) > hr
        assert max(abs(hx), abs(hy)) <= 1.0 and 0.15 <= hr <= reach2d.MAX_HAZARD_RADIUS


# --- Reach2D score -------------------------------------------------------------------


def _reach_state(
    px: float,
    py: float,
    gx: float = 0.8,
    gy: float = 0.0,
    hx: float = -0.5,
    hy: float = 0.8,
    hr: float = 0.2,
) -> list[float]:
    return [px, py, 0.0, 0.0, gx, gy, hx, hy, hr]


def test_reach_score_prefers_moving_toward_the_target() -> None:
    states = [_reach_state(0.0, 0.0)] * 5
    toward = reach2d.score(_clip(states, [[1.0, 0.0]] * 5))
    away = reach2d.score(_clip(states, [[-1.0, 0.0]] * 5))
    assert toward.shape == (5,) and toward.dtype == np.float64
    assert np.all(toward > away)


def test_reach_score_penalises_the_hazard() -> None:
    # Same distance to the target (0.5), once inside the hazard disc and once clear of it.
    inside = _reach_state(0.3, 0.0, hx=0.3, hy=0.0, hr=0.2)
    outside = _reach_state(0.8, 0.5, hx=0.3, hy=0.0, hr=0.2)
    still = [[0.0, 0.0]]
    assert reach2d.score(_clip([inside], still))[0] < reach2d.score(_clip([outside], still))[0] - 1


def test_reach_score_matches_env_reward_exactly() -> None:
    env = gym.make(REACH_IDS[0])
    env.reset(seed=13)
    states, actions, rewards = [], _actions(40, 2, seed=14), []
    for a in actions:
        states.append(env.unwrapped.get_state())
        rewards.append(env.step(a)[1])
    np.testing.assert_array_equal(reach2d.score(_clip(states, actions)), rewards)
    # Without states the env reward is the score.
    np.testing.assert_array_equal(reach2d.score(_clip(None, actions, rewards)), rewards)


# --- HalfCheetahBackward -------------------------------------------------------------


# HalfCheetah-v5's observation space is unbounded by design; the checker warns about it.
@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value")
def test_cheetah_passes_env_checker_and_keeps_forward_reward() -> None:
    env = gym.make(CHEETAH_ID)
    # Render checks need an OpenGL context and a window for "human"; covered separately.
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.zeros(6, dtype=np.float32))
    assert not terminated
    assert reward == pytest.approx(info["reward_forward"] + info["reward_ctrl"])
    env.close()


def _mujoco_state(env: gym.Env) -> np.ndarray:
    data = env.unwrapped.data
    return np.concatenate([data.qpos, data.qvel]).astype(np.float64)


def test_cheetah_score_prefers_backward_motion() -> None:
    backward, forward = np.zeros((4, cheetah.STATE_SIZE)), np.zeros((4, cheetah.STATE_SIZE))
    backward[:, cheetah.ROOTX_VEL] = -3.0
    forward[:, cheetah.ROOTX_VEL] = 3.0
    actions = np.full((4, 6), 0.5)
    s_back = cheetah.score(_clip(backward, actions))
    s_fwd = cheetah.score(_clip(forward, actions))
    assert s_back.shape == (4,) and s_back.dtype == np.float64
    assert np.all(s_back > 0) and np.all(s_back > s_fwd)
    # Effort costs: the same motion with smaller actions scores higher.
    assert np.all(cheetah.score(_clip(backward, actions * 0.1)) > s_back)


def test_cheetah_score_from_states_and_from_rewards() -> None:
    env = gym.make(CHEETAH_ID)
    env.reset(seed=1)
    states, actions, rewards, x_vel = [], _actions(10, 6, seed=2), [], []
    for a in actions:
        states.append(_mujoco_state(env))
        _, r, _, _, info = env.step(a)
        rewards.append(r)
        x_vel.append(info["x_velocity"])
    ctrl = cheetah.CTRL_COST_WEIGHT * np.sum(np.square(actions.astype(np.float64)), axis=1)
    with_states = cheetah.score(_clip(states, actions, rewards))
    np.testing.assert_allclose(with_states, -np.stack(states)[:, 9] - ctrl)
    without = cheetah.score(_clip(None, actions, rewards))
    np.testing.assert_allclose(without, -np.asarray(x_vel) - ctrl, atol=1e-9)
    env.close()


def test_cheetah_frames_are_a_function_of_qpos_qvel() -> None:
    """What the core's MuJoCo adapter does: read qpos/qvel, later MujocoEnv.set_state them."""
    env = gym.make(CHEETAH_ID, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=3)
    env.render()  # no skip without an OpenGL backend: .ci/run installs EGL or fails loudly
    base = env.unwrapped
    for a in _actions(20, 6, seed=4):
        env.step(a)
    state = _mujoco_state(env)
    frame = env.render()
    for a in _actions(20, 6, seed=5):
        env.step(a)
        env.render()
    base.set_state(state[: cheetah.NQ], state[cheetah.NQ :])
    np.testing.assert_array_equal(env.render(), frame)

    fresh = gym.make(CHEETAH_ID, render_mode="rgb_array", width=64, height=48)
    fresh.reset(seed=99)
    fresh.unwrapped.set_state(state[: cheetah.NQ], state[cheetah.NQ :])
    np.testing.assert_array_equal(fresh.render(), frame)
    fresh.close()
    env.close()
