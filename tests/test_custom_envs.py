"""Bringing your own environment: env ids and entry points, the state protocol, image and
Dict observations through SB3's wrapping, and a tiny ``rlhf train`` on every example env."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import rlhf_envs
from gymnasium.utils.env_checker import check_env
from measures import spearman
from rlhf_envs import reach2d
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize, VecTransposeImage

from rlhf.agent import make_agent, make_env_stack
from rlhf.cli import main
from rlhf.clips import ClipCollector
from rlhf.config import ConfigError, EnvConfig, RewardConfig, load_config
from rlhf.environment import (
    CustomState,
    EnvError,
    MujocoState,
    env_factory,
    make_env,
    resolve_env_id,
    state_adapter,
)
from rlhf.reward import FeatureSpec, RewardModel, RewardTrainer
from rlhf.reward.cnn import EnsembleCNN
from rlhf.teachers import SimulatedTeacher, load_score_fn

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"rlhf_envs/Reach2D-v0": "reach2d", "rlhf_envs/Reach2DPixels-v0": "reach2d_pixels",
           "rlhf_envs/Reach2DDict-v0": "reach2d_dict",
           "rlhf_envs/HalfCheetahBackward-v0": "cheetah_backward"}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory


# -- every example env: gymnasium's checker and a tiny rlhf train ----------------------------


def test_every_registered_example_env_has_a_config():
    assert set(CONFIGS) == set(rlhf_envs.SCORES)
    for env_id, name in CONFIGS.items():
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.env.id == env_id and cfg.teacher.score == rlhf_envs.SCORES[env_id]


@pytest.mark.parametrize("env_id", sorted(rlhf_envs.SCORES))
@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value")
def test_every_example_env_passes_gymnasiums_check_env(env_id):
    env = gym.make(env_id)
    # MuJoCo's "human" render mode needs a window; check-env covers rgb_array frames.
    check_env(env.unwrapped, skip_render_check="Cheetah" in env_id)
    env.close()


TINY = ["loop.total_timesteps=256", "loop.total_labels=20", "loop.initial_timesteps=128",
        "loop.iterations=2", "loop.clip_length=10", "env.n_envs=2", "env.max_episode_steps=40",
        "agent.kwargs.n_steps=64", "agent.kwargs.batch_size=64", "agent.kwargs.n_epochs=1",
        "agent.kwargs.policy_kwargs.net_arch=[32, 32]", "reward.ensemble=2",
        "reward.hidden=[32]", "reward.min_steps=5", "reward.epochs=1", "query.pool_size=64",
        "eval.episodes=1",
        # one torch thread: on a busy 2-core machine two threads spin-wait on tiny batches
        "reward.threads=1", "--quiet"]


@pytest.mark.parametrize("env_id", sorted(CONFIGS))
def test_tiny_rlhf_train_runs_end_to_end(capsys, tmp_path, env_id):
    run_dir = tmp_path / "run"
    code = main(["train", str(ROOT / "configs" / f"{CONFIGS[env_id]}.yaml"), *TINY,
                 "--run-dir", str(run_dir)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "rlhf: done: 256 timesteps, 20 labels" in out.out
    model_files = list(run_dir.rglob("reward_model.json"))
    assert model_files, "no reward model checkpoint"
    spec = json.loads(model_files[0].read_text())["spec"]
    assert spec["obs_is_image"] == ("Pixels" in env_id)


# -- env ids, entry points, kwargs, imports ------------------------------------------------


def test_env_id_forms(tmp_path):
    (tmp_path / "my_pkg_env.py").write_text(textwrap.dedent("""
        import gymnasium as gym
        from rlhf_envs.reach2d import Reach2DEnv

        class MyReach(Reach2DEnv):
            pass

        gym.register("my_pkg_env/MyReach-v0", entry_point=MyReach, max_episode_steps=30)
        """))
    # module.path:ClassName, imported from the current directory (as `python -m` would)
    assert resolve_env_id("my_pkg_env:MyReach") == "rlhf-custom/MyReach-v0"
    # module.path:Id-v0, and a namespaced id whose namespace is an importable module
    assert resolve_env_id("my_pkg_env:my_pkg_env/MyReach-v0") == "my_pkg_env/MyReach-v0"
    assert resolve_env_id("my_pkg_env/MyReach-v0") == "my_pkg_env/MyReach-v0"
    # env.kwargs reach the constructor; env.imports registers ids before they are resolved
    env = make_env(EnvConfig(id="my_pkg_env/MyReach-v0", kwargs={"render_size": 32},
                             imports=["my_pkg_env"]), render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (32, 32, 3) and env.spec.max_episode_steps == 30
    env.close()


@pytest.mark.parametrize(("source", "env_id", "message"), [
    ("import not_installed_dependency\n", "broken_dep:Env",
     "env.id: importing 'broken_dep' failed: it needs module 'not_installed_dependency', "
     "which is not installed"),
    ("x = 1 / 0\n", "broken_import:Env",
     "env.id: importing 'broken_import' raised ZeroDivisionError: division by zero "
     "(at broken_import.py:1)"),
    ("def make():\n    pass\n", "broken_factory:make",
     "env.id: 'broken_factory:make' is a function, not a gymnasium.Env subclass"),
])
def test_broken_user_modules_are_one_line_config_errors(tmp_path, source, env_id, message):
    (tmp_path / f"{env_id.partition(':')[0]}.py").write_text(source)
    with pytest.raises(ConfigError) as e:
        resolve_env_id(env_id)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_env_imports_and_kwargs_errors_name_their_key():
    with pytest.raises(ConfigError, match=r"^env.imports: no module named 'nope_pkg'"):
        make_env(EnvConfig(id="Pendulum-v1", imports=["nope_pkg"]))
    with pytest.raises(ConfigError, match=r"^env.kwargs: rlhf_envs/Reach2D-v0 rejected"):
        make_env(EnvConfig(id="rlhf_envs/Reach2D-v0", kwargs={"sizee": 3}))


@pytest.mark.filterwarnings("ignore:.*The reward is a NaN value")
def test_nan_reward_is_caught_with_its_step():
    class NanReward(reach2d.Reach2DEnv):
        def step(self, action):
            obs, _, term, trunc, info = super().step(action)
            return obs, float("nan"), term, trunc, info

    gym.register("test/NanReward-v0", entry_point=NanReward, max_episode_steps=50)
    env = env_factory(EnvConfig(id="test/NanReward-v0"))()
    env.reset(seed=0)
    with pytest.raises(EnvError, match="step 1 of an episode returned reward nan"):
        env.step(np.zeros(2, np.float32))


# -- the state protocol --------------------------------------------------------------------


def test_mujoco_state_restores_the_frame_exactly():
    """MujocoState runs mj_forward after writing qpos/qvel: a restored state renders as the
    live state does (after its own mj_forward), in this env and in a fresh one."""
    env = gym.make("rlhf_envs/HalfCheetahBackward-v0", render_mode="rgb_array", width=64,
                   height=48)
    adapter = state_adapter(env)
    assert isinstance(adapter, MujocoState)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(15):
        env.step(rng.uniform(-1, 1, 6))
    state = adapter.get(env)
    data = env.unwrapped.data
    xpos = data.xpos.copy()  # after mj_step: body poses of one substep earlier
    frame = env.render()     # the env renders after mj_forward
    for _ in range(10):
        env.step(rng.uniform(-1, 1, 6))
    fresh = gym.make("rlhf_envs/HalfCheetahBackward-v0", render_mode="rgb_array", width=64,
                     height=48)
    fresh.reset(seed=5)
    for target in (env, fresh):
        adapter.set(target, state)
        np.testing.assert_array_equal(adapter.get(target), state)
        restored = target.unwrapped.data.xpos.copy()
        mujoco.mj_forward(target.unwrapped.model, target.unwrapped.data)
        np.testing.assert_array_equal(target.unwrapped.data.xpos, restored)  # forward ran
        np.testing.assert_array_equal(target.render(), frame)
    assert not np.array_equal(restored, xpos)  # what a frame without mj_forward would show
    env.close()
    fresh.close()


def test_an_envs_own_get_set_state_wins_over_the_mujoco_adapter():
    from rlhf_envs.cheetah import HalfCheetahBackwardEnv

    class OwnState(HalfCheetahBackwardEnv):
        def get_state(self) -> np.ndarray:
            return np.concatenate([self.data.qpos, self.data.qvel])

        def set_state(self, state, qvel=None):
            if qvel is not None:  # MujocoEnv.reset_model still calls set_state(qpos, qvel)
                return super().set_state(state, qvel)
            return super().set_state(state[:9], state[9:])

    env = OwnState()
    env.reset(seed=0)
    assert isinstance(state_adapter(env), CustomState)
    assert isinstance(state_adapter(gym.make("HalfCheetah-v5")), MujocoState)


# -- what the reward model sees: collection vs SB3's wrapping vs training ------------------


def test_sb3_image_transpose_does_not_change_what_the_reward_model_sees():
    cfg = load_config(ROOT / "configs" / "reach2d_pixels.yaml",
                      ["env.n_envs=2", "loop.clip_length=5", "agent.kwargs.n_steps=16",
                       "agent.kwargs.batch_size=16"])
    stack = make_env_stack(cfg)
    agent = make_agent(cfg.agent, stack.agent_env, seed=0)
    # SB3 put its transpose above our wrappers: the policy sees CHW...
    assert isinstance(agent.get_env(), VecTransposeImage)
    assert agent.observation_space.shape == (3, 64, 64)
    spec = FeatureSpec.from_spaces(stack.venv.observation_space, stack.venv.action_space)
    model = RewardModel(spec, 2, [16], seed=0)
    assert isinstance(model.net, EnsembleCNN) and not spec.channels_first
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def reward_fn(obs, actions, next_obs):
        seen.append((obs.copy(), actions.copy()))
        return model.reward(obs, actions)

    stack.learned.set_reward_fn(reward_fn)
    agent.learn(32)
    # ...while the learned-reward wrapper and the collector below it saw the env's HWC obs.
    assert all(obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8 for obs, _ in seen)
    clip = stack.collector.pool[0]
    assert clip.obs.shape == (5, 64, 64, 3)
    canvas = stack.venv.envs[0].unwrapped._obs_canvas
    for obs, state in zip(clip.obs, clip.states, strict=True):
        np.testing.assert_array_equal(obs, canvas.draw(state))  # the raw observation
    # The clip's steps are exactly what the wrapper scored during the rollout, and the
    # trainer's features of the stored clip give the same rewards.
    env0 = np.stack([obs[0] for obs, _ in seen])
    act0 = np.stack([act[0] for _, act in seen])
    start = next(i for i in range(len(env0)) if np.array_equal(env0[i], clip.obs[0]))
    np.testing.assert_array_equal(env0[start:start + 5], clip.obs)
    at_collection = model.member_rewards(env0[start:start + 5], act0[start:start + 5])
    trainer = RewardTrainer(model, RewardConfig(ensemble=2, hidden=[16], device="cpu",
                                                precision="fp32"), 5)
    np.testing.assert_allclose(trainer.clip_member_returns([clip])[:, 0],
                               at_collection.sum(1), rtol=1e-5)
    stack.close()


def test_dict_observations_reach_the_reward_model_flat_and_unnormalised():
    cfg = load_config(ROOT / "configs" / "reach2d_dict.yaml",
                      ["env.n_envs=2", "loop.clip_length=5", "agent.normalize_obs=true",
                       "agent.kwargs.n_steps=16", "agent.kwargs.batch_size=16"])
    stack = make_env_stack(cfg)
    agent = make_agent(cfg.agent, stack.agent_env, seed=0)
    assert isinstance(stack.agent_env, VecNormalize)  # the policy sees normalised Dicts
    agent.learn(32)
    clip = stack.collector.pool[0]
    assert clip.obs.shape == (5, 11) and clip.obs.dtype == np.float32
    box = reach2d.Reach2DEnv()
    order = [0, 1, 2, 3, 6, 7, 8, 10, 4, 5, 9]  # sorted keys: agent(4), hazard(4), target(3)
    for obs, state in zip(clip.obs, clip.states, strict=True):
        np.testing.assert_array_equal(obs, box._observe(tuple(state))[order])
    stack.close()


def test_dict_reward_model_ranks_held_out_clips_like_the_scripted_score():
    venv = DummyVecEnv([env_factory(EnvConfig(id="rlhf_envs/Reach2DDict-v0"))
                        for _ in range(8)])
    venv.seed(0)
    collector = ClipCollector(venv, clip_length=25, pool_size=10_000)
    rng = np.random.default_rng(0)
    collector.reset()
    obs = collector.reset()
    for t in range(1200):
        # From aimless to heading for the target: clips of every quality.
        toward = obs["target"][:, :2] / (obs["target"][:, 2:] + 1e-6)
        skill = (t // 100) % 4 / 3
        actions = skill * toward + (1 - skill) * rng.uniform(-1, 1, (8, 2))
        obs, *_ = collector.step(actions.astype(np.float32))
    clips = [c.with_id(i) for i, c in enumerate(collector.pool)]
    train, held_out = clips[::2], clips[1::2]
    score = load_score_fn(rlhf_envs.SCORES["rlhf_envs/Reach2DDict-v0"])
    teacher = SimulatedTeacher(score=score)
    pairs = rng.integers(0, len(train), (300, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    mu = np.array([{"a": 1.0, "b": 0.0, "equal": 0.5}[teacher.answer(train[a], train[b])]
                   for a, b in pairs], np.float32)
    ids = np.array([[train[a].id, train[b].id] for a, b in pairs])
    spec = FeatureSpec.from_spaces(venv.observation_space, venv.action_space)
    assert spec.obs_shape == (11,)
    model = RewardModel(spec, 3, [64, 64], seed=0)
    trainer = RewardTrainer(model, RewardConfig(ensemble=3, device="cpu"), 25, seed=0)
    trainer.sync(ids, mu, {c.id: c for c in train})
    for _ in range(3):
        trainer.fit()
    predicted = trainer.clip_member_returns(held_out).mean(0)
    scripted = np.array([score(c).sum() for c in held_out])
    assert spearman(predicted, scripted) > 0.8
    venv.close()
