"""The label-efficiency suite (scripts/efficiency.py), the run-wide learning-rate schedule
and the learning-curve plots."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from stable_baselines3.common.vec_env import DummyVecEnv

from rlhf.agent import RunLinearSchedule, make_agent, set_learn_horizon
from rlhf.config import AgentConfig, ConfigError, EnvConfig
from rlhf.environment import make_env
from rlhf.loop import eval_iterations, iteration_ends
from rlhf.plot import Curve, plot_curves, read_curve_csv

ROOT = Path(__file__).parent.parent
TINY = ["loop.total_timesteps=1024", "loop.total_labels=12", "loop.initial_timesteps=200",
        "loop.iterations=2", "loop.clip_length=10", "env.n_envs=2",
        "agent.kwargs.n_steps=128", "agent.kwargs.batch_size=64", "agent.kwargs.n_epochs=1",
        "reward.hidden=[16]", "reward.min_steps=5", "eval.episodes=1", "eval.every=1"]


def _pendulum_agent(total: int, lr: float = 1e-3):
    env = DummyVecEnv([lambda: make_env(EnvConfig(id="Pendulum-v1"))])
    cfg = AgentConfig(lr_schedule="linear",
                      kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 1,
                              "learning_rate": lr})
    return make_agent(cfg, env, seed=0, total_timesteps=total)


def test_linear_schedule_runs_over_the_whole_run_across_learn_calls():
    # The loop calls learn() once per iteration; the rate must fall over the run, exactly
    # as one learn(total) would make it fall, not restart at every call.
    total = 512
    chunked = _pendulum_agent(total)
    rates = []
    for _ in range(4):
        set_learn_horizon(chunked, 128)
        chunked.learn(128, reset_num_timesteps=False)
        rates.append(chunked.policy.optimizer.param_groups[0]["lr"])
    # SB3 sets the rate before each update, after the update's rollout: 1e-3 * (1 - t/total).
    np.testing.assert_allclose(rates, [1e-3 * (1 - t / total) for t in (128, 256, 384, 512)],
                               atol=1e-12)
    once = _pendulum_agent(total)
    once.learn(total)
    assert once.policy.optimizer.param_groups[0]["lr"] == pytest.approx(rates[-1], abs=1e-12)


def test_linear_schedule_needs_a_number_and_a_budget():
    assert RunLinearSchedule(1.0, 100)(1.0) == 1.0
    env = DummyVecEnv([lambda: make_env(EnvConfig(id="Pendulum-v1"))])
    with pytest.raises(ConfigError, match="agent.lr_schedule"):
        make_agent(AgentConfig(lr_schedule="linear", kwargs={"learning_rate": "fast"}), env,
                   seed=0, total_timesteps=100)


def test_ppo_gets_sb3s_adam_on_the_fused_kernel_with_the_same_updates():
    def trained(policy_kwargs):  # built and trained in turn: SB3 seeds torch's global RNG
        env = DummyVecEnv([lambda: make_env(EnvConfig(id="Pendulum-v1"))])
        kwargs = {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "learning_rate": 1e-3,
                  "policy_kwargs": policy_kwargs}
        agent = make_agent(AgentConfig(kwargs=kwargs), env, seed=0)
        before = [p.detach().clone() for p in agent.policy.parameters()]
        agent.learn(64)
        return agent, before

    fused, before = trained({"net_arch": [32]})
    defaults = fused.policy.optimizer.defaults
    assert isinstance(fused.policy.optimizer, torch.optim.Adam)
    assert defaults["fused"] and defaults["eps"] == 1e-5  # SB3's eps, kept
    plain, _ = trained({"net_arch": [32], "optimizer_kwargs": {"eps": 1e-5}})  # the user's own
    assert not plain.policy.optimizer.defaults["fused"]
    moved = False
    for p0, pf, pp in zip(before, fused.policy.parameters(), plain.policy.parameters(),
                          strict=True):
        torch.testing.assert_close(pf, pp, rtol=1e-4, atol=1e-5)
        moved |= not torch.equal(p0, pf)
    assert moved


def test_iteration_ends_and_eval_points():
    assert iteration_ends(1000, 100, 4) == [0, 200, 500, 700, 1000]
    assert iteration_ends(50, 100, 2)[-1] == 100  # at least one rollout
    assert eval_iterations(24, 3) == [3, 6, 9, 12, 15, 18, 21, 24]
    assert eval_iterations(5, 0) == [5]


def test_plot_groups_seeds_into_a_median_with_a_band(tmp_path):
    csv = tmp_path / "run" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_text("iteration,timesteps,labels,eval_return\n0,0,10,nan\n1,100,20,-5\n"
                   "2,200,30,-2\n")
    curve = read_curve_csv(csv)
    assert curve.name == "run" and curve.x.tolist() == [100, 200]
    assert read_curve_csv(csv, x="labels").x.tolist() == [20, 30]
    with pytest.raises(ValueError, match="no column"):
        read_curve_csv(csv, x="clips")
    curves = [curve, Curve("run", np.array([100, 200]), np.array([-7.0, 0.0])),
              Curve("ppo", np.array([100, 200]), np.array([-1.0, -1.0]))]
    out = plot_curves(curves, tmp_path / "c.png", "timesteps")
    assert Image.open(out).size == (640, 400)


def _suite(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "efficiency.py"),
                           "--quick", "--experiments", "main", "--tasks", "pendulum",
                           "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_suite_runs_rlhf_and_true_reward_ppo_and_reports(tmp_path):
    out = tmp_path / "eff"
    done = _suite(out, "--jobs", "2", "--set", *TINY)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert set(results) == {"pendulum-rlhf-s0", "pendulum-ppo-s0"}
    rlhf, ppo = results["pendulum-rlhf-s0"], results["pendulum-ppo-s0"]
    assert rlhf["labels"] == 12 and ppo["labels"] == 0
    assert rlhf["timesteps"] == ppo["timesteps"] == 1024
    # Both evaluated at the same timesteps (every iteration here), returns are real numbers.
    assert [c[0] for c in rlhf["curve"]] == [c[0] for c in ppo["curve"]] == [512, 1024]
    assert all(-2000 < c[2] <= 0 for c in rlhf["curve"] + ppo["curve"])
    assert -2000 < rlhf["random_return"] < 0
    assert rlhf["torch_threads"] == ppo["torch_threads"] == 1
    report = (out / "report.md").read_text()
    assert "| main | pendulum | rlhf | 12 | 1024 | 0 |" in report
    # The RLHF row carries its reward model's quality from the run's metrics.csv.
    rlhf_row = next(line for line in report.splitlines() if "| pendulum | rlhf |" in line)
    corr, accuracy = (float(c) for c in rlhf_row.split("|")[10:12])
    assert -1 <= corr <= 1 and 0 <= accuracy <= 1
    for png in ("pendulum-timesteps.png", "pendulum-labels.png"):
        assert Image.open(out / png).size == (640, 400)
    # Rerunning skips finished jobs; other settings into the same directory are refused.
    again = _suite(out, "--set", *TINY)
    assert again.returncode == 0 and "2 already done, 0 to run" in again.stdout
    other = _suite(out, "--set", *TINY, "eval.episodes=2")
    assert other.returncode != 0 and "use another --out" in other.stderr + other.stdout
    # One job at a time still gets one torch thread (--threads): it runs beside other work.
    alone = _suite(tmp_path / "alone", "--set", *TINY)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert json.loads((tmp_path / "alone" / "results" / "pendulum-ppo-s0.json")
                      .read_text())["torch_threads"] == 1
    # The offline query ablation runs on the stored clips with the run's own settings.
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "query_ablation.py"),
                           str(out / "runs" / "pendulum-rlhf-s0" / "store.sqlite"),
                           "--initial", "4", "--round", "2", "--budget", "8",
                           "--seeds", "0", "--out", str(tmp_path / "qa")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    qa = json.loads((tmp_path / "qa" / "query_ablation.json").read_text())
    assert {r["strategy"] for r in qa["runs"]} == {"random", "disagreement", "entropy",
                                                   "kcenter", "disagreement-kcenter",
                                                   "entropy-kcenter", "policy-aligned"}
    for r in qa["runs"]:
        assert [row["labels"] for row in r["rows"]] == [4, 6, 8]
        assert all(0 <= row["accuracy"] <= 1 for row in r["rows"])
    assert "| 8 |" in (tmp_path / "qa" / "query_ablation.md").read_text()
    # rlhf plot overlays runs from their run directories.
    run = out / "runs" / "pendulum-rlhf-s0"
    cli = [sys.executable, "-m", "rlhf.cli", "plot"]
    done = subprocess.run([*cli, str(run), str(run), "--name", "a", "a", "--x", "labels",
                           "--out", str(tmp_path / "p.png")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "p.png").size == (640, 400)
    bad = subprocess.run([*cli, str(tmp_path), "--out", str(tmp_path / "q.png")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert not (tmp_path / "q.png").exists()


def test_report_orders_budgets_by_number_and_sweeps_only_the_sweeps_seeds(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from efficiency import report

    (tmp_path / "results").mkdir()

    def result(exp: str, kind: str, group: str, seed: int, labels: int, ret: float) -> None:
        name = f"halfcheetah-{group}-s{seed}"
        (tmp_path / "results" / f"{name}.json").write_text(json.dumps({
            "experiment": exp, "task": "halfcheetah", "kind": kind, "group": group,
            "seed": seed, "name": name, "labels": labels, "label_budget": labels,
            "timesteps": 1000, "final_return": ret, "random_return": 0.0, "wall_s": 1.0,
            "cpu_s": 1.0, "curve": [[1000, labels, ret]]}))

    for seed in (0, 1):
        result("main", "ppo", "ppo", seed, 0, 1000.0)
    result("main", "rlhf", "rlhf", 0, 700, 900.0)
    result("main", "rlhf", "rlhf", 1, 700, 100.0)  # no sweep on seed 1: not in the sweep
    for labels, ret in ((100, 500.0), (200, 1000.0), (1400, 1100.0)):
        result("sweep", "rlhf", f"labels{labels}", 0, labels, ret)
    text = report(tmp_path)
    rows = [line.split("|")[3].strip() for line in text.splitlines() if "| sweep |" in line]
    assert rows == ["labels100", "labels200", "labels1400"]
    assert ("label sweep (seeds 0), median normalised score by labels: 100: 0.50, 200: 1.00, "
            "700: 0.90, 1400: 1.10. 80% of true-reward agent: about 160 labels.") in text
    # Query selection at 100 labels: the preset's own strategy is the sweep's labels100 run.
    result("queries", "rlhf", "random100", 0, 100, 300.0)
    line = next(x for x in report(tmp_path).splitlines() if x.startswith("Query selection"))
    assert line.startswith("Query selection at 100 labels, final return: random 300") and \
        "; disagreement 500" in line and "(seeds 0)" in line
    # The few-label experiment: each way on its own seeds, SURF's runs beside the plain ones.
    for labels, plain, surf in ((25, 100.0, 500.0), (50, 300.0, 900.0)):
        result("fewer", "rlhf", f"labels{labels}", 1, labels, plain)
        result("fewer", "rlhf", f"surf{labels}", 1, labels, surf)
    text = report(tmp_path)
    assert ("few labels, without SURF (seeds 1), median normalised score by labels: 25: 0.10, "
            "50: 0.30. 80% of true-reward agent: not reached") in text
    assert ("few labels, with SURF (pseudo-labels and crops) (seeds 1), median normalised "
            "score by labels: 25: 0.50, 50: 0.90. 80% of true-reward agent: about 44 labels."
            ) in text


def test_labels_to_reach_interpolates_and_bounds():
    sys.path.insert(0, str(ROOT / "scripts"))
    from efficiency import labels_to_reach

    assert labels_to_reach([100, 200], [0.5, 1.0], 0.8) == "about 160 labels"
    assert labels_to_reach([100, 200], [0.9, 1.0], 0.8).startswith("100 labels or fewer")
    assert labels_to_reach([100, 200], [0.5, 0.7], 0.8) == "not reached at any budget measured"
