"""The convolutional reward ensemble: batched == per-member loop, automatic choice for image
observations, the uint8 training store, and learning a reward from pixels on a toy task."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from measures import spearman
from torch import nn

from rlhf.clips import Clip
from rlhf.config import RewardConfig
from rlhf.reward import FeatureSpec, RewardModel, RewardTrainer
from rlhf.reward.cnn import EnsembleCNN, default_conv_layers
from rlhf.reward.network import EnsembleMLP
from rlhf.teachers import SimulatedTeacher

ACT = gym.spaces.Box(-1, 1, (2,), np.float32)


def member_forward(net: EnsembleCNN, m: int, x: torch.Tensor) -> torch.Tensor:
    """Member m of ``net`` as a plain per-member network on its own inputs x (N, D)."""
    n = len(x)
    img = x[:, : net.pixels].reshape(n, net.n_images, *net.image_shape)
    if not net.channels_first:
        img = img.permute(0, 1, 4, 2, 3)
    h = img.reshape(n, *net.chw)
    for (_, _, stride), w, b in zip(net.conv_layers, net.weights, net.biases, strict=True):
        h = nn.functional.leaky_relu(nn.functional.conv2d(h, w[m], b[m], stride=stride), 0.01)
    h = torch.cat([h.flatten(1), x[:, net.pixels:]], dim=1)
    last = len(net.head.weights) - 1
    for i, (w, b) in enumerate(zip(net.head.weights, net.head.biases, strict=True)):
        h = h @ w[m] + b[m]
        if i < last:
            h = nn.functional.leaky_relu(h, 0.01)
    return h.squeeze(-1)


@pytest.mark.parametrize(("shape", "channels_first", "n_images", "extra"), [
    ((20, 24, 3), False, 1, 2),    # HWC, actions as extra inputs
    ((3, 20, 24), True, 1, 0),     # CHW, no extra inputs
    ((36, 36, 1), False, 2, 4),    # next observation stacked on the channels
])
def test_batched_equals_per_member_loop(shape, channels_first, n_images, extra):
    gen = torch.Generator().manual_seed(0)
    net = EnsembleCNN(3, shape, channels_first, n_images, extra, [16, 8], generator=gen)
    x = torch.rand(3, 7, net.in_dim, generator=gen)
    out = net(x)
    assert out.shape == (3, 7)
    (out * torch.arange(1.0, 4.0)[:, None]).sum().backward()
    batched_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    loop = torch.stack([member_forward(net, m, x[m]) for m in range(3)])
    torch.testing.assert_close(out, loop, rtol=1e-5, atol=1e-6)
    (loop * torch.arange(1.0, 4.0)[:, None]).sum().backward()
    for g_batched, p in zip(batched_grads, net.parameters(), strict=True):
        torch.testing.assert_close(g_batched, p.grad, rtol=1e-4, atol=1e-6)

    # Shared inputs (N, D) give what each member computes on the same rows.
    shared = x[0]
    torch.testing.assert_close(net(shared), net(shared.expand(3, -1, -1)), rtol=1e-5,
                               atol=1e-6)


def test_members_differ_and_l2_flops_are_per_member():
    net = EnsembleCNN(4, (64, 64, 3), False, 1, 2, [64], generator=torch.Generator())
    assert net.conv_layers == default_conv_layers(64, 64)
    assert not torch.allclose(net.weights[0][0], net.weights[0][1])
    l2 = net.l2()
    assert l2.shape == (4,)
    expected = sum(w[1].pow(2).sum() for w in net.weights) + sum(
        w[1].pow(2).sum() for w in net.head.weights)
    torch.testing.assert_close(l2[1], expected)
    # conv1 15x15x16 outputs of an 8x8x3 kernel, conv2 6x6x32 of 4x4x16, conv3 4x4x32 of 3x3x32
    conv = 2 * (15 * 15 * 16 * 8 * 8 * 3 + 6 * 6 * 32 * 4 * 4 * 16 + 4 * 4 * 32 * 3 * 3 * 32)
    assert net.flops_per_input() == conv + 2 * ((512 + 2) * 64 + 64)


def test_small_images_get_a_trunk_that_fits():
    for side in (4, 10, 16, 36, 84):
        net = EnsembleCNN(2, (side, side, 3), False, 1, 0, [8])
        assert net(torch.rand(5, net.in_dim)).shape == (2, 5)


def test_network_is_chosen_from_the_observation_space():
    image = FeatureSpec.from_spaces(gym.spaces.Box(0, 255, (32, 32, 3), np.uint8), ACT)
    chw = FeatureSpec.from_spaces(gym.spaces.Box(0, 255, (3, 32, 32), np.uint8), ACT)
    vector = FeatureSpec.from_spaces(gym.spaces.Box(-1, 1, (5,), np.float32), ACT)
    floats = FeatureSpec.from_spaces(gym.spaces.Box(0, 1, (3, 32, 32), np.float32), ACT)
    assert isinstance(RewardModel(image, 2, [8]).net, EnsembleCNN)
    assert not image.channels_first and chw.channels_first
    assert isinstance(RewardModel(chw, 2, [8]).net, EnsembleCNN)
    assert isinstance(RewardModel(vector, 2, [8]).net, EnsembleMLP)
    assert isinstance(RewardModel(floats, 2, [8]).net, EnsembleMLP)  # not uint8: no CNN


def test_hwc_and_chw_observations_give_the_same_rewards():
    """The same pixels, stored HWC or CHW, reach the CNN as the same (C, H, W) images."""
    hwc = FeatureSpec.from_spaces(gym.spaces.Box(0, 255, (16, 12, 3), np.uint8), ACT)
    chw = FeatureSpec.from_spaces(gym.spaces.Box(0, 255, (3, 16, 12), np.uint8), ACT)
    a, b = RewardModel(hwc, 2, [8], seed=1), RewardModel(chw, 2, [8], seed=1)
    obs = np.random.default_rng(0).integers(0, 256, (6, 16, 12, 3), dtype=np.uint8)
    act = np.zeros((6, 2), np.float32)
    np.testing.assert_allclose(a.member_rewards(obs, act),
                               b.member_rewards(obs.transpose(0, 3, 1, 2), act), rtol=1e-5)


# -- learning a reward from pixels ----------------------------------------------------------

SIDE, T, GOAL = 16, 10, 11.0


def dot_clips(n: int, rng: np.random.Generator) -> list[Clip]:
    """A 2x2 dot random-walking on a 16x16 HWC image; true reward -|x - 11| / 4, so the
    reward model must read the dot's column from pixels."""
    clips = []
    for i in range(n):
        x = np.clip(rng.uniform(1, SIDE - 3) + np.cumsum(rng.normal(0, 1.0, T + 1)), 0, SIDE - 2)
        y = np.clip(rng.uniform(1, SIDE - 3) + np.cumsum(rng.normal(0, 1.0, T + 1)), 0, SIDE - 2)
        frames = np.zeros((T + 1, SIDE, SIDE, 3), np.uint8)
        frames[..., 2] = 40  # a background that is not all zeros
        for t in range(T + 1):
            c, r = round(x[t]), round(y[t])
            frames[t, r:r + 2, c:c + 2] = (255, 200, 0)
        col = np.round(x[1:])
        clips.append(Clip(obs=frames[:-1], actions=np.zeros((T, 2), np.float32),
                          rewards=-np.abs(col - GOAL) / 4, dones=np.zeros(T, bool),
                          last_obs=frames[-1], id=i))
    return clips


def test_cnn_reward_model_ranks_held_out_image_clips_like_the_true_reward():
    rng = np.random.default_rng(0)
    clips = dot_clips(150, rng)
    teacher = SimulatedTeacher()
    pairs = rng.integers(0, len(clips), (200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    mu = np.array([{"a": 1.0, "b": 0.0, "equal": 0.5}[teacher.answer(clips[a], clips[b])]
                   for a, b in pairs], np.float32)
    space = gym.spaces.Box(0, 255, (SIDE, SIDE, 3), np.uint8)
    spec = FeatureSpec.from_spaces(space, ACT, use_action=False)
    cfg = RewardConfig(ensemble=2, hidden=[32], device="cpu", batch_size=16, lr=3e-3)
    model = RewardModel(spec, cfg.ensemble, cfg.hidden, seed=0)
    assert isinstance(model.net, EnsembleCNN)
    trainer = RewardTrainer(model, cfg, clip_length=T, seed=0)
    trainer.sync(pairs, mu, {c.id: c for c in clips})
    assert trainer.data.features.images.view().dtype == torch.uint8  # not float features
    stats = trainer.fit(steps=100)
    held_out = dot_clips(80, np.random.default_rng(1))
    predicted = trainer.clip_member_returns(held_out).mean(0)
    true = np.array([c.true_return for c in held_out])
    assert spearman(predicted, true) > 0.8, spearman(predicted, true)
    assert stats.val_accuracy > 0.75


def test_pixel_store_rebuilds_exactly_the_float_features():
    clips = dot_clips(6, np.random.default_rng(2))
    space = gym.spaces.Box(0, 255, (SIDE, SIDE, 3), np.uint8)
    spec = FeatureSpec.from_spaces(space, ACT, use_next_obs=True)
    model = RewardModel(spec, 2, [8])
    trainer = RewardTrainer(model, RewardConfig(ensemble=2, hidden=[8], device="cpu"), T)
    trainer.sync(np.array([[0, 1], [2, 3], [4, 5]]), np.ones(3, np.float32),
                 {c.id: c for c in clips})
    rows = torch.tensor([[[0, 1]], [[2, 5]]])
    got = trainer.data.features.view()[rows]
    want = ((trainer.data.clip_features(clips)[rows] - model.feat_mean) / model.feat_std)
    assert got.shape == want.shape == (2, 1, 2, T, spec.in_dim)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # Pixels keep the x/255 scaling; only the action inputs are standardised.
    assert torch.all(model.feat_mean[: model.net.pixels] == 0)
    assert torch.all(model.feat_std[: model.net.pixels] == 1)


def test_cnn_reward_model_saves_and_loads(tmp_path):
    space = gym.spaces.Box(0, 255, (3, 20, 20), np.uint8)
    model = RewardModel(FeatureSpec.from_spaces(space, gym.spaces.Discrete(3)), 2, [8], seed=4)
    model.save(tmp_path)
    loaded = RewardModel.load(tmp_path)
    assert isinstance(loaded.net, EnsembleCNN)
    obs = np.random.default_rng(0).integers(0, 256, (5, 3, 20, 20), dtype=np.uint8)
    act = np.array([0, 1, 2, 1, 0])
    np.testing.assert_array_equal(model.member_rewards(obs, act), loaded.member_rewards(obs, act))
