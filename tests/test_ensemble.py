"""The batched ensemble computes what M separate networks compute."""

import numpy as np
import pytest
import torch
from reference_ensemble import (
    ReferenceEnsemble,
    reference_pair_loop_step,
    reference_train_step,
)

from rlhf.reward.network import EnsembleMLP


@pytest.mark.parametrize("hidden", [[16], [32, 32], [8, 8, 8]])
def test_batched_equals_per_member_outputs_and_gradients(hidden):
    gen = torch.Generator().manual_seed(0)
    batched = EnsembleMLP(4, 7, hidden, generator=gen)
    ref = ReferenceEnsemble(batched)
    x = torch.randn(4, 33, 7, generator=gen)
    out_b, out_r = batched(x), ref(x)
    assert out_b.shape == (4, 33)
    torch.testing.assert_close(out_b, out_r, rtol=1e-5, atol=1e-6)
    # gradients of a per-member loss land on the right member's slice
    weights = torch.arange(1, 5, dtype=torch.float32)[:, None]
    (out_b * weights).pow(2).sum().backward()
    (out_r * weights).pow(2).sum().backward()
    for layer, (w, b) in enumerate(zip(batched.weights, batched.biases, strict=True)):
        for m, member in enumerate(ref.members):
            linear = member[2 * layer]
            torch.testing.assert_close(w.grad[m], linear.weight.grad.T, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(b.grad[m, 0], linear.bias.grad, rtol=1e-4, atol=1e-5)


def test_shared_inputs_broadcast_to_every_member():
    net = EnsembleMLP(3, 5, [8], generator=torch.Generator().manual_seed(1))
    x = torch.randn(10, 5)
    torch.testing.assert_close(net(x), net(x.expand(3, 10, 5)))


def test_members_start_different():
    net = EnsembleMLP(5, 4, [8], generator=torch.Generator().manual_seed(0))
    w = net.weights[0].detach().numpy()
    assert all(not np.allclose(w[i], w[j]) for i in range(5) for j in range(i + 1, 5))


def test_bf16_autocast_stays_close_to_float32():
    # CPU autocast emulates the CUDA bf16 path: same ranking, small relative error.
    net = EnsembleMLP(3, 17, [64, 64], generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 256, 17)
    full = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = net(x).float()
    rel = (half - full).abs().max() / full.abs().max()
    assert rel < 0.05
    assert np.corrcoef(half.detach().numpy().ravel(), full.detach().numpy().ravel())[0, 1] > 0.999


def test_pair_loop_reference_takes_the_same_step_as_the_batched_reference():
    # The benchmark's slowest baseline must compute the same thing as the others.
    gen = torch.Generator().manual_seed(3)
    net = EnsembleMLP(1, 6, [16, 16], generator=gen)
    batched_ref, loop_ref = ReferenceEnsemble(net).members[0], ReferenceEnsemble(net).members[0]
    features = torch.randn(12, 5, 6, generator=gen)  # (C, T, D)
    pairs = torch.randint(12, (20, 2), generator=gen)
    mu = torch.randint(2, (20,), generator=gen).float()
    idx = torch.randint(20, (8,), generator=gen)
    # SGD: an update linear in the gradient (Adam would amplify float noise in ~0 gradients)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (batched_ref, loop_ref)]
    for _ in range(3):
        loss_b = reference_train_step(batched_ref, opts[0], features, pairs, mu, idx)
        loss_l = reference_pair_loop_step(loop_ref, opts[1], features, pairs, mu, idx)
        assert loss_b == pytest.approx(loss_l, rel=1e-5)
    for pb, pl in zip(batched_ref.parameters(), loop_ref.parameters(), strict=True):
        torch.testing.assert_close(pb, pl, rtol=1e-4, atol=1e-5)
