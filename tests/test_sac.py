"""Off-policy agents from preferences (PEBBLE-style SAC): the whole loop, relabelling,
pre-training, checkpoints of the replay buffer, kills, resume, a user's own agent class."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO

from rlhf import agents
from rlhf.cli import main as cli_main
from rlhf.config import load_config
from rlhf.loop import Run, run
from rlhf.replay import load_replay_buffer
from rlhf.reward.model import RewardModel
from rlhf.store import Store

ROOT = Path(__file__).parent.parent
SMOKE_SAC = str(ROOT / "configs" / "smoke_sac.yaml")


class UsersPPO(PPO):
    """A user's own agent class, named in a config as ``test_sac:UsersPPO``."""


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory) -> Path:
    """configs/smoke_sac.yaml run end to end in a subprocess, as a user runs it."""
    run_dir = tmp_path_factory.mktemp("sac") / "run"
    done = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", SMOKE_SAC, "--run-dir",
                           str(run_dir), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "1200 timesteps, 30 labels" in done.stdout
    return run_dir


def _latest(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / (run_dir / "checkpoints" / "LATEST").read_text().strip()


def _labels(run_dir: Path) -> list[tuple[int, str]]:
    with Store(run_dir / "store.sqlite") as store:
        return [(lab.query_id, lab.choice) for lab in store.labels()]


def test_smoke_sac_runs_and_status_eval_and_screenshot_work_on_it(sac_run, tmp_path, capsys):
    status = json.loads((sac_run / "status.json").read_text())
    assert status["finished"] and status["timesteps"] == 1200 and status["labels"] == 30
    assert cli_main(["status", str(sac_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == 30
    assert cli_main(["eval", str(sac_run), "--episodes", "1"]) == 0
    assert "true return over 1 episodes" in capsys.readouterr().out
    assert cli_main(["label", str(sac_run), "--screenshot", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_the_checkpointed_replay_buffer_holds_no_pickle_and_the_fitted_reward(sac_run):
    latest = _latest(sac_run)
    with zipfile.ZipFile(latest / "replay.zip") as zf:
        names = zf.namelist()
    assert {"observations.npy", "actions.npy", "rewards.npy"} <= set(names)
    with np.load(latest / "replay.zip", allow_pickle=False) as data:  # no pickle anywhere
        rewards, obs, actions = data["rewards"], data["observations"], data["actions"]
    # Relabelled by the last fit: the rewards are the saved reward model's on the stored
    # transitions (SB3 keeps SAC's actions scaled to [-1, 1]; Pendulum's range is 2).
    model = RewardModel.load(latest)
    flat_obs = obs.reshape(-1, obs.shape[-1])
    expected = model.reward(flat_obs, 2.0 * actions.reshape(len(flat_obs), -1), None)
    np.testing.assert_allclose(rewards.reshape(-1), expected, rtol=1e-4, atol=1e-5)
    assert len(flat_obs) == 1200


def test_relabelling_changes_the_buffer_when_the_model_changes(tmp_path):
    cfg = load_config(SMOKE_SAC, [f"run_dir={tmp_path / 'r'}"])
    r = Run(cfg, progress=False)
    try:
        r.agent.explore(cfg.loop.initial_timesteps, [])
        assert isinstance(r.agent, agents.OffPolicyAgent)
        buf = r.sb3.replay_buffer
        pretrained = buf.rewards[: buf.pos].copy()
        assert pretrained.std() > 0  # the state-entropy bonus, not a constant
        r.trainer.model.fitted.fill_(True)
        r.agent.on_reward_fit(r.trainer.model)
        first = buf.rewards[: buf.pos].copy()
        assert not np.allclose(first, pretrained)
        with np.errstate(all="ignore"):
            for p in r.trainer.model.parameters():
                p.data.add_(0.5)
        r.agent.on_reward_fit(r.trainer.model)
        assert not np.allclose(buf.rewards[: buf.pos], first)
    finally:
        r.close()


def test_the_pretraining_bonus_prefers_spread_out_states():
    from stable_baselines3 import SAC

    from rlhf.agent import make_env_stack

    cfg = load_config(SMOKE_SAC)
    envs = make_env_stack(cfg)
    try:
        sac = SAC("MlpPolicy", envs.agent_env, buffer_size=200, learning_starts=10, seed=0)
        for i in range(100):  # a buffer of states on a line
            state = np.array([[i / 10, 0.0, 0.0]], np.float32)
            sac.replay_buffer.add(state, state, np.zeros((1, 1)), np.zeros(1), np.zeros(1),
                                  [{}])
        bonus = agents.EntropyBonus(sac, np.random.default_rng(0), k=3)
        near = np.array([[5.0, 0.0, 0.0]], np.float32)  # in the middle of the line
        far = np.array([[5.0, 4.0, 0.0]], np.float32)  # away from everything seen
        values = bonus(np.concatenate([near, far]), np.zeros((2, 1)), None)
        assert values[1] > 10 * values[0]
    finally:
        envs.close()


def test_sac_kill_9_at_a_failpoint_and_resume_loses_nothing(tmp_path):
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", SMOKE_SAC, "--run-dir",
                             str(run_dir), "--quiet"], cwd=ROOT, capture_output=True,
                            env={**os.environ, "RLHF_FAILPOINT": "checkpoint:2"}, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    before = _labels(run_dir)
    assert before
    saved = _latest(run_dir)  # iteration 0's checkpoint: the kill was inside iteration 1's
    cfg = load_config(run_dir / "config.yaml", [f"run_dir={run_dir}"])
    r = Run(cfg, progress=False, resume=True)
    try:
        assert r.restore() == 1
        buf = r.sb3.replay_buffer
        check = type(buf)(buf.buffer_size, buf.observation_space, buf.action_space,
                          n_envs=buf.n_envs)
        load_replay_buffer(check, saved / "replay.zip")
        assert buf.pos == check.pos and buf.pos > 0
        for name in ("observations", "actions", "rewards", "next_observations", "dones"):
            assert np.array_equal(getattr(buf, name), getattr(check, name)), name
        assert r.sb3.num_timesteps == json.loads((saved / "state.json").read_text())["timesteps"]
    finally:
        r.close()
    done = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume", str(run_dir),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = _labels(run_dir)
    assert set(before) <= set(after) and len(after) == 30
    with Store(run_dir / "store.sqlite") as store:
        assert store.counts().label_events == 30  # each query answered once
    assert json.loads((run_dir / "status.json").read_text())["timesteps"] == 1200


def test_same_seed_twice_same_labels_and_losses(tmp_path):
    results = []
    for name in ("a", "b"):
        cfg = load_config(SMOKE_SAC, [f"run_dir={tmp_path / name}", "eval.episodes=1"])
        res = run(cfg, progress=False)
        results.append((_labels(res.run_dir),
                        [m.get("rm_train_loss") for m in res.metrics], res.final_return))
    assert results[0] == results[1]


def test_a_users_agent_class_runs_the_loop_and_an_unknown_name_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "mine"
    assert cli_main(["train", str(ROOT / "configs" / "smoke.yaml"), "agent.algo=test_sac:UsersPPO",
                     "loop.total_timesteps=512", "loop.total_labels=10", "loop.iterations=1",
                     "eval.episodes=1", "--run-dir", str(run_dir), "--quiet"]) == 0
    assert "algo: test_sac:UsersPPO" in (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    assert cli_main(["train", str(ROOT / "configs" / "smoke.yaml"), "agent.algo=DDPGG",
                     "--run-dir", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "PPO, A2C, SAC, TD3" in err
    assert not (tmp_path / "x").exists()
    assert cli_main(["train", str(ROOT / "configs" / "smoke.yaml"), "agent.pretrain_steps=100",
                     "--run-dir", str(tmp_path / "y"), "--quiet"]) == 2
    assert "agent.pretrain_steps: PPO is on-policy" in capsys.readouterr().err
    shutil.rmtree(run_dir)


def test_an_asynchronous_person_labels_a_sac_run_while_it_trains(tmp_path):
    from test_viewer import Person

    run_dir = tmp_path / "person"
    person = Person(run_dir)  # answers every pair as it comes, through the viewer's claims
    person.start()
    try:
        cfg = load_config(SMOKE_SAC, [f"run_dir={run_dir}", "teacher.kind=human",
                                      "teacher.min_new_labels=3", "eval.episodes=1"])
        result = run(cfg, progress=False)
    finally:
        person.stop.set()
    assert person.saw_waiting is not None  # the trainer waited for the first labels only
    assert result.timesteps == 1200
    fits = [m for m in result.metrics if not np.isnan(m.get("rm_train_loss", np.nan))]
    assert len(fits) >= 2  # refitted (and the buffer relabelled) as labels landed
    with Store(run_dir / "store.sqlite") as store:
        assert {lab.teacher for lab in store.labels()} == {"person"}
