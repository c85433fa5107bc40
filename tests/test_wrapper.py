import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from rlhf.clips import ClipCollector
from rlhf.config import EnvConfig
from rlhf.environment import env_factory
from rlhf.reward import FeatureSpec, RewardModel
from rlhf.wrappers import LearnedRewardVecEnv, RelabelRollout


def test_reward_is_the_models_and_info_keeps_the_true_reward(line_env_id):
    venv = DummyVecEnv([env_factory(EnvConfig(id=line_env_id)) for _ in range(3)])
    venv.seed(0)
    collector = ClipCollector(venv, clip_length=5)
    model = RewardModel(FeatureSpec.from_spaces(venv.observation_space, venv.action_space),
                        members=4, hidden=[8], seed=1)
    calls = []

    def reward_fn(obs, actions, next_obs):
        calls.append(len(obs))
        return model.reward(obs, actions)

    env = LearnedRewardVecEnv(collector, reward_fn)
    obs = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(25):  # crosses episode ends (horizon 10)
        actions = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
        expected = model.reward(obs, actions)
        prev = obs
        obs, rewards, _dones, infos = env.step(actions)
        np.testing.assert_allclose(rewards, expected, rtol=1e-6)
        x_next = np.array([i.get("terminal_observation", o)[0] for i, o in zip(infos, obs,
                                                                                  strict=True)])
        true = -np.abs(np.clip(prev[:, 0] + 0.5 * actions[:, 0], -10, 10) - 1)
        np.testing.assert_allclose([i["true_reward"] for i in infos], true, atol=1e-5)
        np.testing.assert_allclose(x_next, np.clip(prev[:, 0] + 0.5 * actions[:, 0], -10, 10),
                                   atol=1e-5)
    assert calls == [3] * 25  # one batched call per vector step
    # the collector below the wrapper recorded the env's own reward, not the model's
    clip = collector.pool[0]
    np.testing.assert_allclose(clip.rewards, -np.abs(clip.next_obs[:, 0] - 1), atol=1e-5)


def test_without_a_reward_function_the_true_reward_passes_through(line_env_id):
    venv = DummyVecEnv([env_factory(EnvConfig(id=line_env_id))])
    env = LearnedRewardVecEnv(venv)
    env.reset()
    _, rewards, _, infos = env.step(np.array([[0.5]], dtype=np.float32))
    assert rewards[0] == np.float32(infos[0]["true_reward"])


def test_numpy_env_loop_path_equals_the_torch_reward():
    import gymnasium as gym

    from rlhf.reward.model import _NumpyReward

    rng = np.random.default_rng(0)
    for act_space, actions in [
        (gym.spaces.Box(-1, 1, (2,)), rng.uniform(-1, 1, (6, 2)).astype(np.float32)),
        (gym.spaces.Discrete(3), rng.integers(0, 3, 6)),
        (gym.spaces.MultiDiscrete([2, 4]), rng.integers(0, 2, (6, 2))),
    ]:
        spec = FeatureSpec.from_spaces(gym.spaces.Box(-5, 5, (3,)), act_space,
                                       use_next_obs=True)
        model = RewardModel(spec, members=4, hidden=[16, 8], seed=2, clip_reward=1.5)
        obs = rng.normal(size=(6, 3)).astype(np.float32)  # <= SMALL rows: the NumPy path
        nxt = rng.normal(size=(6, 3)).astype(np.float32)
        model.set_feature_stats(spec.features(*map(torch.as_tensor, (obs, actions, nxt))))
        fn = model.reward_fn()
        assert isinstance(fn, _NumpyReward)
        np.testing.assert_allclose(fn(obs, actions, nxt), model.reward(obs, actions, nxt),
                                   rtol=1e-5, atol=1e-5)


def test_relabelling_each_rollout_at_its_end_trains_like_rewards_at_each_step(line_env_id):
    # Same seeds, same reward model: PPO must see the same rewards, returns and advantages
    # (including SB3's bootstrap of the truncated episodes) whether the learned reward comes
    # at each step or for the whole rollout at its end, and so end with the same policy.
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    class Capture(BaseCallback):
        def __init__(self):
            super().__init__()
            self.seen: list[tuple[np.ndarray, ...]] = []

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            b = self.model.rollout_buffer
            self.seen.append((b.rewards.copy(), b.returns.copy(), b.advantages.copy()))

    runs = {}
    for deferred in (False, True):
        venv = DummyVecEnv([env_factory(EnvConfig(id=line_env_id)) for _ in range(2)])
        model = RewardModel(FeatureSpec.from_spaces(venv.observation_space, venv.action_space),
                            members=3, hidden=[8], seed=1)
        calls = []

        def reward_fn(obs, actions, next_obs, model=model, calls=calls):
            calls.append(len(obs))
            return model.reward(obs, actions)

        env = LearnedRewardVecEnv(venv, reward_fn, deferred=deferred)
        agent = PPO("MlpPolicy", env, n_steps=24, batch_size=16, n_epochs=2, seed=0)
        capture = Capture()
        callbacks = [RelabelRollout(env), capture] if deferred else [capture]
        agent.learn(96, callback=CallbackList(callbacks))  # 2 rollouts of 24 steps x 2 envs
        runs[deferred] = (capture.seen, calls, agent.policy.state_dict())
    (step_seen, step_calls, step_policy), (roll_seen, roll_calls, roll_policy) = runs.values()
    assert step_calls == [2] * 48 and roll_calls == [48, 48]  # one call per rollout
    assert len(step_seen) == len(roll_seen) == 2
    for a, b in zip(step_seen, roll_seen, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for k, v in step_policy.items():
        torch.testing.assert_close(v, roll_policy[k], rtol=1e-5, atol=1e-6)


def test_relabel_setting_resolves_auto_by_the_reward_models_device():
    from rlhf.agent import relabel_per_rollout
    from rlhf.config import load_config

    def per_rollout(*overrides: str) -> bool:
        return relabel_per_rollout(load_config(overrides=list(overrides)))

    assert per_rollout("reward.relabel=rollout", "reward.device=cpu")
    assert not per_rollout("reward.relabel=step", "reward.device=cuda")
    assert per_rollout("reward.relabel=auto", "reward.device=cuda:1")
    assert not per_rollout("reward.relabel=auto", "reward.device=cpu")
