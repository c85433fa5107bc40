import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from rlhf.clips import Clip, ClipCollector
from rlhf.config import EnvConfig
from rlhf.environment import env_factory, make_env, state_adapter


def _collector(env_id: str, n_envs: int, clip_length: int, **kwargs) -> ClipCollector:
    cfg = EnvConfig(id=env_id, kwargs=kwargs)
    venv = DummyVecEnv([env_factory(cfg) for _ in range(n_envs)])
    venv.seed(0)
    return ClipCollector(venv, clip_length, pool_size=1000)


def _run(collector: ClipCollector, steps: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    collector.reset()
    infos_log = []
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (collector.num_envs, *collector.action_space.shape))
        _, _, dones, infos = collector.step(actions.astype(np.float32))
        infos_log.append((dones.copy(), infos))
    return infos_log


def test_clips_never_cross_episode_ends(line_env_id):
    # Horizon 10, clip length 4: each episode gives two clips (steps 0-3, 4-7); the 2-step
    # remainder at the end is dropped, and the next clip starts at the reset observation.
    col = _collector(line_env_id, n_envs=3, clip_length=4, horizon=10)
    _run(col, 30)  # three episodes per env
    assert col.clips_collected == 3 * 3 * 2
    for clip in col.pool:
        assert len(clip) == 4
        t = clip.obs[:, 1] * 10  # the env's step counter, from the observation
        assert t[0] in (0, 4)
        np.testing.assert_allclose(np.diff(t), 1)
        # states line up with observations: state (x, t) before each step
        np.testing.assert_allclose(clip.states[:, 0], clip.obs[:, 0], atol=1e-6)
        np.testing.assert_allclose(clip.states[:, 1], t, atol=1e-6)
        # the true reward is the env's: -|x_{t+1} - 1|
        np.testing.assert_allclose(clip.rewards, -np.abs(clip.next_obs[:, 0] - 1), atol=1e-5)
        assert not clip.dones.any()


def test_clip_ending_at_episode_end_keeps_terminal_observation(line_env_id):
    col = _collector(line_env_id, n_envs=1, clip_length=5, horizon=10)
    _run(col, 10)
    first, second = list(col.pool)
    assert second.dones[-1] and not second.dones[:-1].any()
    assert second.last_obs[1] == pytest.approx(1.0)  # t = 10 / horizon: the terminal obs
    assert first.last_obs[1] == pytest.approx(second.obs[0, 1])


def test_pendulum_states_restore_the_observations():
    col = _collector("Pendulum-v1", n_envs=2, clip_length=8)
    _run(col, 20)
    env = make_env(EnvConfig(id="Pendulum-v1"))
    env.reset(seed=0)
    adapter = state_adapter(env)
    assert adapter is not None and adapter.name == "classic-control"
    for clip in list(col.pool)[:3]:
        for t in range(len(clip)):
            adapter.set(env, clip.states[t])
            obs = env.unwrapped._get_obs()
            np.testing.assert_allclose(obs, clip.obs[t], atol=1e-6)


def test_clip_validates_shapes():
    with pytest.raises(ValueError, match="Clip.actions has 2 steps, obs has 3"):
        Clip(obs=np.zeros((3, 2)), actions=np.zeros((2, 1)), rewards=np.zeros(3),
             dones=np.zeros(3, bool), last_obs=np.zeros(2))


def test_dict_observations_are_flattened():
    class DictEnv(gym.Env):
        observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)),
                                             "b": gym.spaces.Box(-1, 1, (3,))})
        action_space = gym.spaces.Discrete(3)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self._obs(), {}

        def _obs(self):
            return {"a": np.full(2, self.t, np.float32), "b": np.full(3, -self.t, np.float32)}

        def step(self, action):
            self.t += 1
            return self._obs(), float(action), False, self.t >= 6, {}

    venv = DummyVecEnv([lambda: DictEnv()])
    col = ClipCollector(venv, clip_length=3)
    col.reset()
    for _ in range(6):
        col.step(np.array([2]))
    clip = col.pool[0]
    assert clip.obs.shape == (3, 5)
    np.testing.assert_array_equal(clip.obs[1], [1, 1, -1, -1, -1])
    np.testing.assert_array_equal(clip.actions, [2, 2, 2])
    np.testing.assert_array_equal(clip.rewards, [2, 2, 2])
