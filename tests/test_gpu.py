"""The reward model on a CUDA GPU: the same numbers as on the CPU, and runs that move between
a GPU machine and a CPU one (train on the GPU box, resume or inspect on a laptop).

Skipped where torch sees no CUDA GPU (every CI machine); run on a GPU machine with
``python -m pytest tests/test_gpu.py``. BENCHMARKS.md says when they last ran there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from measures import spearman
from stable_baselines3.common.buffers import ReplayBuffer
from test_reward import ACT, OBS, toy_clips

from rlhf.config import RewardConfig
from rlhf.replay import relabel
from rlhf.reward import FeatureSpec, RewardModel, RewardTrainer
from rlhf.store import Store
from rlhf.teachers import SimulatedTeacher

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run on a GPU machine)")

ROOT = Path(__file__).parent.parent


def _trainer(device: str, precision: str, seed: int = 0) -> RewardTrainer:
    """A 3-member trainer synced with 300 perfect labels of test_reward's toy task."""
    rng = np.random.default_rng(seed)
    clips = toy_clips(200, rng)
    pairs = rng.integers(0, 200, (300, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    teacher = SimulatedTeacher()
    mu = np.array([{"a": 1.0, "b": 0.0}[teacher.answer(clips[a], clips[b])] for a, b in pairs],
                  dtype=np.float32)
    cfg = RewardConfig(ensemble=3, hidden=[32, 32], device=device, precision=precision)
    model = RewardModel(FeatureSpec.from_spaces(OBS, ACT), 3, cfg.hidden, seed=seed)
    trainer = RewardTrainer(model, cfg, clip_length=10, seed=seed)
    trainer.sync(pairs, mu, {c.id: c for c in clips})
    return trainer


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_fit_on_the_gpu_learns_the_reward_as_on_the_cpu(precision):
    held_out = toy_clips(100, np.random.default_rng(99))
    true = np.array([c.true_return for c in held_out])
    results = {}
    for device in ("cpu", "cuda"):
        trainer = _trainer(device, precision)
        stats = [trainer.fit() for _ in range(3)]
        assert next(trainer.model.parameters()).device.type == device
        predicted = trainer.clip_member_returns(held_out).mean(0)
        results[device] = (spearman(predicted, true), stats[-1])
    (rho_cpu, cpu), (rho_gpu, gpu) = results["cpu"], results["cuda"]
    # Different kernels and (on the GPU) a different RNG stream: the same quality, not the
    # same bits.
    assert rho_gpu > 0.9 and abs(rho_gpu - rho_cpu) < 0.05
    assert gpu.val_accuracy > 0.8 and gpu.train_loss < 0.35
    assert abs(gpu.train_loss - cpu.train_loss) < 0.1


def test_relabelling_on_the_gpu_gives_the_cpu_rewards():
    trainer = _trainer("cpu", "fp32")
    trainer.fit()
    model_cpu = trainer.model
    model_gpu = RewardModel(model_cpu.spec, 3, [32, 32], seed=0)
    model_gpu.load_state_dict(model_cpu.state_dict())
    model_gpu.to("cuda").eval()
    buffers = []
    for _ in range(2):
        buf = ReplayBuffer(50_000, OBS, ACT, device="cpu", n_envs=2)  # 25k steps x 2
        rng = np.random.default_rng(3)
        buf.observations[:] = rng.uniform(-3, 3, buf.observations.shape)
        buf.next_observations[:] = rng.uniform(-3, 3, buf.next_observations.shape)
        buf.actions[:] = rng.uniform(-1, 1, buf.actions.shape)
        buf.pos = 20_000  # a part-filled buffer: the rest must stay untouched
        buffers.append(buf)
    relabel(buffers[0], model_cpu.eval(), chunk=8192)
    relabel(buffers[1], model_gpu, chunk=8192)
    cpu, gpu = buffers[0].rewards, buffers[1].rewards
    assert np.abs(cpu[:20_000]).max() > 0  # a real reward was written
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)  # fp32 on both: kernel rounding only
    assert not gpu[20_000:].any()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


@pytest.mark.parametrize("preset", ["smoke.yaml", "smoke_sac.yaml"])
def test_a_run_killed_on_the_gpu_resumes_on_the_cpu_and_loses_no_label(tmp_path, preset):
    """Killed (SIGKILL) while writing its third checkpoint with the reward model on CUDA,
    the run resumes with ``reward.device=cpu`` and finishes; ``rlhf eval`` reads it."""
    run_dir = tmp_path / "run"
    out = _cli("train", f"configs/{preset}", "reward.device=cuda", "loop.iterations=4", "--run-dir",
               str(run_dir), "--quiet", RLHF_FAILPOINT="checkpoint:3")
    assert out.returncode == -signal.SIGKILL, out.stderr
    with Store(run_dir / "store.sqlite") as store:
        before = {(lab.query_id, lab.choice) for lab in store.labels()}
    assert before
    out = _cli("train", "--resume", str(run_dir), "reward.device=cpu", "--quiet")
    assert out.returncode == 0, out.stderr
    with Store(run_dir / "store.sqlite") as store:
        after = {(lab.query_id, lab.choice) for lab in store.labels()}
        assert store.counts().pending == 0
    assert before <= after
    assert json.loads((run_dir / "status.json").read_text())["finished"]
    ev = _cli("eval", str(run_dir), "--episodes", "2", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["episodes"] == 2
