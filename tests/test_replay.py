"""rlhf.replay: relabelling, saving/loading and the state-entropy bonus of off-policy runs.

Buffers are filled by SB3's SAC itself (random warm-up actions, no training) stepping the
learned-reward wrapper, so the rewards it stores are exactly what the agent saw.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

from rlhf.entropy import RunningStd, knn_state_entropy
from rlhf.replay import (
    ReplayBufferError,
    load_replay_buffer,
    relabel,
    save_replay_buffer,
)
from rlhf.reward import FeatureSpec, RewardModel
from rlhf.wrappers import LearnedRewardVecEnv

HORIZON = 15  # short Pendulum episodes: every buffer below crosses several episode ends


class DictPendulum(gym.ObservationWrapper):
    """Pendulum with a Dict observation {angle: (2,), speed: (1,)}."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({
            "angle": gym.spaces.Box(-1, 1, (2,), np.float32),
            "speed": gym.spaces.Box(-8, 8, (1,), np.float32)})

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"angle": observation[:2], "speed": observation[2:]}


def make_model(obs_space: gym.Space, act_space: gym.Space, use_next_obs: bool,
               seed: int = 1) -> RewardModel:
    """A reward model with non-trivial input and output normalisation and clipping at 1."""
    spec = FeatureSpec.from_spaces(obs_space, act_space, use_next_obs=use_next_obs)
    model = RewardModel(spec, members=3, hidden=[16], seed=seed, clip_reward=1.0)
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(256, spec.in_dim, generator=gen) * 2 + 0.5
    model.set_feature_stats(feats)
    model.set_output_stats(torch.randn(256, spec.in_dim, generator=gen))
    return model


def collect(steps: int, n_envs: int = 2, buffer_steps: int = 100, use_next_obs: bool = True,
            dict_obs: bool = False, **buffer_kwargs) -> tuple[ReplayBuffer, RewardModel]:
    """``steps`` vector steps of Pendulum by SAC's warm-up through the learned reward."""
    def make() -> gym.Env:
        env = gym.make("Pendulum-v1", max_episode_steps=HORIZON)
        return DictPendulum(env) if dict_obs else env

    venv = DummyVecEnv([make] * n_envs)
    model = make_model(venv.observation_space, venv.action_space, use_next_obs)
    env = LearnedRewardVecEnv(venv, model.reward_fn(), use_next_obs=use_next_obs)
    optimize_memory = buffer_kwargs.pop("optimize_memory_usage", False)  # SAC's own argument
    agent = SAC("MultiInputPolicy" if dict_obs else "MlpPolicy", env,
                buffer_size=buffer_steps * n_envs, learning_starts=10**9, seed=0,
                device="cpu", optimize_memory_usage=optimize_memory,
                replay_buffer_kwargs=buffer_kwargs)
    agent.learn(steps * n_envs)
    env.close()
    return agent.replay_buffer, model


def fresh_like(buffer: ReplayBuffer, buffer_steps: int | None = None) -> ReplayBuffer:
    steps = buffer.buffer_size if buffer_steps is None else buffer_steps
    return type(buffer)(steps * buffer.n_envs, buffer.observation_space, buffer.action_space,
                        device="cpu", n_envs=buffer.n_envs,
                        optimize_memory_usage=buffer.optimize_memory_usage,
                        handle_timeout_termination=buffer.handle_timeout_termination)


def env_action(buffer: ReplayBuffer, a: np.ndarray) -> np.ndarray:
    low, high = buffer.action_space.low, buffer.action_space.high
    return low + 0.5 * (a + 1.0) * (high - low)


def per_transition(buffer: ReplayBuffer, model: RewardModel, steps: range) -> np.ndarray:
    """model.reward_fn() (the wrapper's env-loop path) called on one transition at a time."""
    fn = model.reward_fn()
    out = np.zeros((len(steps), buffer.n_envs), np.float32)
    for i, t in enumerate(steps):
        for e in range(buffer.n_envs):
            nxt = buffer.next_observations[t, e][None] if model.spec.use_next_obs else None
            out[i, e] = fn(buffer.observations[t, e][None],
                           env_action(buffer, buffer.actions[t, e])[None], nxt)[0]
    return out


# -- relabel -------------------------------------------------------------------------------


def test_relabel_reproduces_the_rewards_the_agent_saw_across_episode_ends():
    buffer, model = collect(steps=70)
    assert not buffer.full and buffer.pos == 70
    seen = buffer.rewards[:70].copy()
    done_t, done_e = np.nonzero(buffer.dones[:69])
    assert len(done_t) >= 4  # episode ends, whose next obs is the true final one, not reset
    assert not np.allclose(buffer.next_observations[done_t, done_e],
                           buffer.observations[done_t + 1, done_e])
    assert np.abs(seen).max() == pytest.approx(1.0)  # clipping is exercised
    buffer.rewards[:70] = 0
    stats = relabel(buffer, model)
    assert stats.transitions == 140 and stats.seconds >= 0
    np.testing.assert_allclose(buffer.rewards[:70], seen, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffer.rewards[:70], per_transition(buffer, model, range(70)),
                               rtol=1e-5, atol=1e-5)


def test_relabel_follows_the_weights_and_touches_only_the_filled_part():
    buffer, model = collect(steps=40)
    relabel(buffer, model)
    before = buffer.rewards[:40].copy()
    buffer.rewards[40:] = 123.0
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    relabel(buffer, model)
    assert not np.allclose(buffer.rewards[:40], before)
    np.testing.assert_allclose(buffer.rewards[:40], per_transition(buffer, model, range(40)),
                               rtol=1e-5, atol=1e-5)
    assert (buffer.rewards[40:] == 123.0).all()


def test_chunk_size_does_not_change_the_relabelled_rewards_of_a_wrapped_buffer():
    buffer, model = collect(steps=70, buffer_steps=30)  # wrapped around: full, pos 10
    assert buffer.full and buffer.pos == 10
    seen = buffer.rewards.copy()
    results = []
    for chunk in (1, 7, 65_536):
        buffer.rewards[:] = 0
        assert relabel(buffer, model, chunk=chunk).transitions == 60
        results.append(buffer.rewards.copy())
    np.testing.assert_allclose(results[0], seen, rtol=1e-5, atol=1e-5)
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-6, atol=1e-6)


def test_optimize_memory_usage_buffers_relabel_without_next_obs_and_refuse_with_it():
    kwargs = {"optimize_memory_usage": True, "handle_timeout_termination": False}
    buffer, model = collect(steps=70, buffer_steps=30, use_next_obs=False, **kwargs)
    assert buffer.full and buffer.pos == 10
    seen = buffer.rewards.copy()
    buffer.rewards[:] = 0
    assert relabel(buffer, model).transitions == 58  # slot pos is no valid transition
    assert buffer.rewards[10, 0] == 0 and buffer.rewards[10, 1] == 0
    keep = np.r_[0:10, 11:30]
    np.testing.assert_allclose(buffer.rewards[keep], seen[keep], rtol=1e-5, atol=1e-5)

    buffer, _ = collect(steps=20, use_next_obs=False, **kwargs)
    next_model = make_model(buffer.observation_space, buffer.action_space, use_next_obs=True)
    with pytest.raises(ReplayBufferError, match="optimize_memory_usage"):
        relabel(buffer, next_model)


def test_dict_observations_relabel_through_the_wrappers_flattening():
    buffer, model = collect(steps=40, dict_obs=True)
    assert isinstance(buffer.observations, dict)
    seen = buffer.rewards[:40].copy()
    buffer.rewards[:] = 0
    relabel(buffer, model)
    np.testing.assert_allclose(buffer.rewards[:40], seen, rtol=1e-5, atol=1e-5)


def test_images_stored_transposed_by_sb3_relabel_in_the_models_layout():
    hwc = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    chw = gym.spaces.Box(0, 255, (3, 8, 8), np.uint8)
    actions = gym.spaces.Discrete(3)
    model = RewardModel(FeatureSpec.from_spaces(hwc, actions), members=2, hidden=[8], seed=0)
    buffer = ReplayBuffer(20, chw, actions, device="cpu", n_envs=2)
    rng = np.random.default_rng(0)
    for _ in range(10):
        buffer.add(rng.integers(0, 256, (2, 3, 8, 8), np.uint8),
                   rng.integers(0, 256, (2, 3, 8, 8), np.uint8), rng.integers(0, 3, (2, 1)),
                   np.zeros(2), np.zeros(2), [{}, {}])
    relabel(buffer, model)
    obs = buffer.observations.reshape(20, 3, 8, 8).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(buffer.rewards.reshape(-1),
                               model.reward(obs, buffer.actions.reshape(20, 1)), rtol=1e-6)
    other = RewardModel(FeatureSpec.from_spaces(gym.spaces.Box(0, 255, (8, 8, 4), np.uint8),
                                                actions), members=2, hidden=[8])
    with pytest.raises(ReplayBufferError, match="images"):
        relabel(buffer, other)


# -- save / load ---------------------------------------------------------------------------


def fields(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    out = {"actions": buffer.actions, "rewards": buffer.rewards, "dones": buffer.dones,
           "timeouts": buffer.timeouts}
    names = ["observations"] + ([] if buffer.optimize_memory_usage else ["next_observations"])
    for name in names:
        stored = getattr(buffer, name)
        out.update({f"{name}/{k}": v for k, v in stored.items()} if isinstance(stored, dict)
                   else {name: stored})
    return out


def assert_bitwise_equal(a: ReplayBuffer, b: ReplayBuffer) -> None:
    assert (a.pos, a.full) == (b.pos, b.full)
    fa, fb = fields(a), fields(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert fa[name].dtype == fb[name].dtype and fa[name].shape == fb[name].shape, name
        assert fa[name].tobytes() == fb[name].tobytes(), name


@pytest.mark.parametrize("case", ["partial", "wrapped", "optimize_memory", "dict"])
def test_save_load_round_trip_is_bitwise(tmp_path, case):
    kwargs = {"partial": {"steps": 40}, "wrapped": {"steps": 70, "buffer_steps": 30},
              "optimize_memory": {"steps": 40, "use_next_obs": False,
                                  "optimize_memory_usage": True,
                                  "handle_timeout_termination": False},
              "dict": {"steps": 40, "dict_obs": True}}[case]
    buffer, _ = collect(**kwargs)
    path = tmp_path / "replay.npz"
    save_replay_buffer(buffer, path)
    loaded = fresh_like(buffer)
    loaded.rewards[:] = 7.0  # the unsaved tail must come back as zeros, as in the original
    load_replay_buffer(loaded, path)
    assert_bitwise_equal(buffer, loaded)
    if case == "partial":  # only the filled part is written
        with np.load(path, allow_pickle=False) as z:
            assert z["rewards"].shape == (40, 2)


def test_the_file_holds_no_pickle(tmp_path):
    buffer, _ = collect(steps=20, dict_obs=True)
    path = tmp_path / "replay.npz"
    save_replay_buffer(buffer, path)
    with np.load(path, allow_pickle=False) as z:  # would raise for any pickled entry
        assert {"meta", "actions", "observations/angle", "next_observations/speed"} \
            <= set(z.files)
        for name in z.files:
            assert z[name].dtype != object
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            head = zf.read(name)[:128]
            assert name.endswith(".npy") and head.startswith(b"\x93NUMPY"), name
            assert b"'|O'" not in head, name
    assert path.read_bytes()[:4] == b"PK\x03\x04"  # a zip, not a pickle stream (b"\x80...")
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary behind


def rewrite(path: Path, change) -> None:
    """Rewrite the saved file with ``change`` applied to its dict of arrays."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_reward_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("rewards.npy")
    data[info.header_offset + 200] ^= 0xFF  # inside the rewards entry's data: a bad CRC
    path.write_bytes(bytes(data))


def _nan_obs(a: dict) -> None:
    a["observations"][3, 1, 0] = np.nan


DAMAGE = {
    "truncated": (_truncate, "truncated"),
    "flipped byte": (_flip_a_reward_byte, "Bad CRC-32 for file 'rewards.npy'"),
    "missing key": (lambda p: rewrite(p, lambda a: a.pop("rewards")), "no 'rewards' array"),
    "extra key": (lambda p: rewrite(p, lambda a: a.update(extra=np.zeros(3))),
                  "unexpected array 'extra'"),
    "wrong dtype": (lambda p: rewrite(p, lambda a: a.update(rewards=a["rewards"]
                                                              .astype(np.float64))),
                    "'rewards' is float64 (40, 2), this buffer holds float32 (40, 2)"),
    "wrong shape": (lambda p: rewrite(p, lambda a: a.update(actions=a["actions"][:39])),
                    "'actions' is float32 (39, 2, 1)"),
    "non-finite obs": (lambda p: rewrite(p, _nan_obs),
                       "'observations' holds NaN or infinite values); the buffer was left empty"),
    "no meta": (lambda p: rewrite(p, lambda a: a.pop("meta")), "no 'meta' entry"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_refused_with_one_line_naming_it(tmp_path, damage):
    buffer, _ = collect(steps=40)
    path = tmp_path / "replay.npz"
    save_replay_buffer(buffer, path)
    hurt, expected = DAMAGE[damage]
    hurt(path)
    target = fresh_like(buffer)
    with pytest.raises(ReplayBufferError) as info:
        load_replay_buffer(target, path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message, message
    assert (target.pos, target.full) == (0, False)
    assert not target.rewards.any() and not target.observations.any()  # never half-loaded


def test_a_buffer_of_another_size_or_a_missing_file_is_refused(tmp_path):
    buffer, _ = collect(steps=20)
    path = tmp_path / "replay.npz"
    save_replay_buffer(buffer, path)
    with pytest.raises(ReplayBufferError, match=r"100 steps x 2 envs, this one has 50 x 2"):
        load_replay_buffer(fresh_like(buffer, buffer_steps=50), path)
    with pytest.raises(ReplayBufferError, match="no replay buffer file"):
        load_replay_buffer(buffer, tmp_path / "absent.npz")


# -- state entropy -------------------------------------------------------------------------


def grid(spacing: float, n: int = 10) -> np.ndarray:
    """n x n points in the plane, ``spacing`` apart: (n * n, 2)."""
    xs = np.arange(n, dtype=np.float32) * spacing
    return np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)


def test_knn_distance_on_a_grid_is_known():
    # 4th neighbour on a grid: an inner point has 4 at s, an edge point 3 at s then s*sqrt2,
    # a corner 2 at s, 1 at s*sqrt2, then 2s.
    s = 0.5
    d = knn_state_entropy(grid(s), k=4, c=None).reshape(10, 10)
    np.testing.assert_allclose(d[1:-1, 1:-1], s, rtol=1e-6)
    np.testing.assert_allclose(d[0, 1:-1], s * math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(d[[0, 0, -1, -1], [0, -1, 0, -1]], 2 * s, rtol=1e-6)
    np.testing.assert_allclose(knn_state_entropy(grid(s), k=4).reshape(10, 10),
                               np.log(1 + d), rtol=1e-6)


def test_spread_out_states_score_higher_than_clustered_or_repeated_ones():
    spread = knn_state_entropy(grid(2.0), k=4)
    clustered = knn_state_entropy(grid(0.1), k=4)
    repeated = knn_state_entropy(np.repeat(grid(2.0)[:20], 5, axis=0), k=4)
    assert (spread > clustered).all()
    np.testing.assert_array_equal(repeated, 0.0)  # 4 exact copies each: log(1 + 0)
    assert spread.mean() > repeated.mean()


def test_chunked_knn_equals_unchunked_and_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    whole = knn_state_entropy(x, k=5, c=None, chunk=4096)
    np.testing.assert_array_equal(knn_state_entropy(x, k=5, c=None, chunk=37), whole)
    dist = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    np.testing.assert_allclose(whole, np.sort(dist, axis=1)[:, 4], rtol=1e-5)
    # Against a reference sample that holds the states themselves (PEBBLE: batch vs buffer).
    np.testing.assert_array_equal(
        knn_state_entropy(x[:50], x, k=5, c=None, states_in_reference=True, chunk=64),
        whole[:50])
    outside = rng.normal(size=(30, 6)).astype(np.float32)
    d_out = np.linalg.norm(outside[:, None].astype(np.float64) - x[None], axis=-1)
    np.testing.assert_allclose(knn_state_entropy(outside, x, k=5, c=None, chunk=64),
                               np.sort(d_out, axis=1)[:, 4], rtol=1e-5)
    with pytest.raises(ValueError, match="neighbours"):
        knn_state_entropy(x[:5], k=5)


def test_running_std_matches_the_std_of_everything_seen():
    rng = np.random.default_rng(1)
    norm = RunningStd()
    np.testing.assert_array_equal(norm.normalise(np.array([2.0])), [2.0])  # nothing seen
    batches = [rng.normal(3.0, 2.5, size=n) for n in (1, 17, 200, 64)]
    for b in batches:
        norm.update(b)
    everything = np.concatenate(batches)
    assert norm.count == len(everything)
    assert norm.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert norm.std == pytest.approx(everything.std(), rel=1e-12)
    np.testing.assert_allclose(norm.normalise(everything[:5]), everything[:5] / everything.std(),
                               rtol=1e-6)
