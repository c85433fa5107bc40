#!/usr/bin/env python
"""Label efficiency: RLHF from a simulated teacher against the same agent on the true reward.

    python scripts/efficiency.py                     # everything below, seeds 0 1 2
    python scripts/efficiency.py --quick             # one seed, small budgets: minutes
    python scripts/efficiency.py --experiments main --tasks pendulum --jobs 2

Experiments (``--experiments``, default all):

- ``main``: each task at its preset's label budget (Pendulum 200, HalfCheetah and Hopper
  700, Reach2D 300), and SB3 PPO on the true reward with the same settings and timesteps.
  Reach2D's "true reward" is its scripted score (RLHF and PPO both judged by it).
- ``sweep``: HalfCheetah at 100, 200, 350, 700 and 1400 labels (labels needed for 80% of
  true-reward PPO's return).
- ``irrational``: HalfCheetah, 700 labels, a B-Pref-style teacher (mistake 0.1, β = 1,
  'equal' below a tenth of the batch's mean clip return, B-Pref's 'equal' teacher).
- ``noisy``: HalfCheetah, 700 labels, the B-Pref teacher at mistake 0.1, 0.2 and 0.3, each
  without and with ``reward.robust`` (RIME-style screening).
- ``crowd``: HalfCheetah, 700 labels from five simulated annotators (one flipping 40% of
  their answers), the reward model without and with ``reward.annotator_reliability``.
- ``queries``: HalfCheetah at 100 labels with random, disagreement, entropy,
  disagreement + k-center and policy-aligned (QPA) selection.
- ``fewer``: HalfCheetah at 25, 50 and 100 labels with and without SURF's semi-supervision
  and temporal crops (labels needed for 80% of true-reward PPO, each way).
- With the tasks ``halfcheetah_sac`` (SAC, PEBBLE-style, 100 labels in 100k steps) and
  ``walker2d_sac`` (200 labels, fixed horizon), ``main`` runs each against SAC on the true
  reward; for HalfCheetah, ``sac-sweep``: 25, 50 and 200 labels;
  ``sac-ablation``: without unsupervised pre-training, and without relabelling.

Every job (one RLHF run, or one PPO baseline) runs in its own process and writes
``OUT/results/JOB.json`` when it finishes; rerunning the command skips finished jobs, so an
interrupted suite continues where it stopped. The report (``OUT/report.md``: tables with
min/median/max over seeds, wall times, versions) and the curves (``OUT/*.png``: true return
against timesteps and against labels) are rebuilt from whatever results exist
(``--report-only`` rebuilds them without running anything).

With ``--jobs N`` the jobs run N at a time, each with ``--threads`` torch threads (default
1, also for one job: the suite is meant to run beside other work, and torch's OpenMP
threads spin while they wait for a busy core: two 2-thread HalfCheetah jobs on 2 cores,
beside a test run, took 470–550 s for an iteration that takes about 40 s with one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf.seeds import LOOP_EVAL, RANDOM_FLOOR  # noqa: E402


@dataclass(frozen=True)
class Task:
    config: str
    quick: tuple[str, ...]
    """Overrides for ``--quick``: small budgets, a sanity check that the suite runs."""


SAC_QUICK = ("loop.total_timesteps=3000", "loop.total_labels=20", "loop.iterations=2",
             "eval.every=2", "eval.episodes=1", "agent.pretrain_steps=600",
             "agent.kwargs.learning_starts=200", "agent.kwargs.buffer_size=5000",
             "reward.hidden=[32, 32]", "env.max_episode_steps=200")
"""--quick for the SAC tasks: the whole PEBBLE loop in a few thousand steps."""

TASKS: dict[str, Task] = {
    "pendulum": Task("configs/pendulum.yaml",
                     ("loop.total_timesteps=16384", "loop.total_labels=60",
                      "loop.iterations=8", "eval.every=2", "eval.episodes=5")),
    "halfcheetah": Task("configs/halfcheetah.yaml",
                        ("loop.total_timesteps=20480", "loop.total_labels=60",
                         "loop.iterations=8", "eval.every=4", "eval.episodes=2",
                         "loop.initial_timesteps=1000")),
    "hopper": Task("configs/hopper.yaml",
                   ("loop.total_timesteps=20480", "loop.total_labels=60",
                    "loop.iterations=8", "eval.every=4", "eval.episodes=2",
                    "loop.initial_timesteps=1000")),
    "halfcheetah_sac": Task("configs/halfcheetah_sac.yaml", SAC_QUICK),
    "walker2d_sac": Task("configs/walker2d_sac.yaml", SAC_QUICK),
    "reach2d": Task("configs/reach2d.yaml",
                    ("loop.total_timesteps=20480", "loop.total_labels=60",
                     "loop.iterations=5", "eval.every=5", "eval.episodes=5")),
}
SWEEP_LABELS = (100, 200, 350, 1400)  # and the preset's 700: main's run
QUICK_SWEEP_LABELS = (20, 40)  # and --quick's 60
IRRATIONAL = ("teacher.kind=irrational", "teacher.mistake=0.1", "teacher.beta=1.0",
              "teacher.equal_threshold=0.1", "teacher.relative_thresholds=true")
QUERY_LABELS, QUICK_QUERY_LABELS = 100, 30
POLICY_WINDOW = 400
"""QPA's window for ``policy-aligned``: the newest clips, about one HalfCheetah iteration's
(20k steps cut into 50-step clips)."""
STRATEGIES = {"random": ["query.strategy=random"],
              "disagreement": ["query.strategy=disagreement"],
              "entropy": ["query.strategy=entropy"],
              "disagreement-kcenter": ["query.strategy=disagreement-kcenter"],
              "policy-aligned": ["query.strategy=random", f"query.recent_clips={POLICY_WINDOW}"]}
"""``queries`` (issue 19): the online comparison at 100 labels, where selection matters most.
``policy-aligned`` is QPA's: uniform over the current policy's clips."""
PRESET_STRATEGY = "disagreement"
"""configs/halfcheetah.yaml's own: its ``queries`` run is the sweeps' ``labels100`` job."""
FEWER_LABELS, QUICK_FEWER_LABELS = (25, 50, 100), (20,)
SURF = ("reward.pseudo_ratio=4", "reward.crop_steps=10")
"""``fewer`` (issue 19): semi-supervision (four unlabelled pairs per labelled pair, SURF's
ratio) and temporal crops of up to 10 of the 50 steps, against the same budgets without."""
EXPERIMENTS = ("main", "sweep", "irrational", "noisy", "crowd", "queries", "fewer",
               "sac-sweep", "sac-ablation")
CROWD = ("teacher.kind=crowd", "teacher.crowd_mistakes=[0.0,0.0,0.0,0.0,0.4]")
CROWD_CARELESS = 4
"""The index of the member flipping 40% of answers (``sim-4``)."""
"""``crowd`` (issue 20): five simulated annotators, one of them flipping 40% of answers."""
NOISY_MISTAKES = (0.2, 0.3, 0.1)
"""``noisy`` (issue 19): the B-Pref teacher at these mistake rates, each without and with
``reward.robust``; 0.2 and 0.3 first, where the targets are. Without robust at 0.1 it is
``irrational``'s run."""
SAC_SWEEP_LABELS, QUICK_SAC_SWEEP_LABELS = (25, 50, 200), (10,)
SAC_ABLATIONS = {"nopretrain": ["agent.pretrain_steps=0"],
                 "norelabel": ["agent.relabel_buffer=false"]}
"""HalfCheetah with SAC (issue 16): without unsupervised pre-training (the first queries
are about the untrained policy's clips), and without relabelling (each transition keeps the
learned reward it was stored with)."""


@dataclass
class Job:
    """One process's work: an RLHF run (``kind='rlhf'``) or a PPO baseline on the true
    reward (``kind='ppo'``) of one task and seed. ``group`` names the setting in tables and
    plots (seeds of one group are summarised together)."""

    experiment: str
    task: str
    kind: str
    group: str
    seed: int
    overrides: list[str] = field(default_factory=list)
    config: str = ""
    """The preset; default: the task's."""

    def __post_init__(self) -> None:
        self.config = self.config or TASKS[self.task].config

    @property
    def name(self) -> str:
        return f"{self.task}-{self.group}-s{self.seed}"


def plan(experiments: list[str], tasks: list[str], seeds: list[int], quick: bool,
         extra: list[str] | None = None) -> list[Job]:
    """The jobs of the suite, without duplicates (the sweep's 700 is main's run).
    ``extra``: overrides for every job, applied last."""
    jobs: dict[str, Job] = {}

    def add(job: Job) -> None:
        job.overrides = [*(TASKS[job.task].quick if quick else ()), *job.overrides,
                         *(extra or ())]
        jobs.setdefault(job.name, job)

    for seed in seeds:
        if "main" in experiments:
            for task in tasks:
                add(Job("main", task, "rlhf", "rlhf", seed))
                add(Job("main", task, "ppo", "ppo", seed))
        if "halfcheetah_sac" in tasks:
            if "sac-sweep" in experiments:
                for n in QUICK_SAC_SWEEP_LABELS if quick else SAC_SWEEP_LABELS:
                    add(Job("sac-sweep", "halfcheetah_sac", "rlhf", f"labels{n}", seed,
                            [f"loop.total_labels={n}"]))
            if "sac-ablation" in experiments:
                for name, overrides in SAC_ABLATIONS.items():
                    add(Job("sac-ablation", "halfcheetah_sac", "rlhf", name, seed,
                            list(overrides)))
        if "halfcheetah" not in tasks:
            continue  # the other experiments are HalfCheetah's
        if "sweep" in experiments:
            add(Job("sweep", "halfcheetah", "ppo", "ppo", seed))
            add(Job("sweep", "halfcheetah", "rlhf", "rlhf", seed))  # the preset's 700
            for n in QUICK_SWEEP_LABELS if quick else SWEEP_LABELS:
                add(Job("sweep", "halfcheetah", "rlhf", f"labels{n}", seed,
                        [f"loop.total_labels={n}"]))
        if "irrational" in experiments:
            add(Job("irrational", "halfcheetah", "rlhf", "irrational", seed, list(IRRATIONAL)))
        if "noisy" in experiments:
            for m in NOISY_MISTAKES:
                teacher = [f"teacher.mistake={m}" if o.startswith("teacher.mistake=") else o
                           for o in IRRATIONAL]
                plain = "irrational" if m == 0.1 else f"mistake{m}"
                add(Job("noisy", "halfcheetah", "rlhf", plain, seed, list(teacher)))
                add(Job("noisy", "halfcheetah", "rlhf", f"mistake{m}-robust", seed,
                        [*teacher, "reward.robust=true"]))
        if "crowd" in experiments:
            add(Job("crowd", "halfcheetah", "rlhf", "crowd", seed, list(CROWD)))
            add(Job("crowd", "halfcheetah", "rlhf", "crowd-weighted", seed,
                    [*CROWD, "reward.annotator_reliability=true"]))
        if "queries" in experiments:
            n = QUICK_QUERY_LABELS if quick else QUERY_LABELS
            for name, overrides in STRATEGIES.items():
                if name == PRESET_STRATEGY:  # the preset as it is: the label sweeps' run
                    add(Job("queries", "halfcheetah", "rlhf", f"labels{n}", seed,
                            [f"loop.total_labels={n}"]))
                else:
                    add(Job("queries", "halfcheetah", "rlhf", f"{name}{n}", seed,
                            [f"loop.total_labels={n}", *overrides]))
        if "fewer" in experiments:
            for n in QUICK_FEWER_LABELS if quick else FEWER_LABELS:
                add(Job("fewer", "halfcheetah", "rlhf", f"labels{n}", seed,
                        [f"loop.total_labels={n}"]))
                add(Job("fewer", "halfcheetah", "rlhf", f"surf{n}", seed,
                        [f"loop.total_labels={n}", *SURF]))
    return list(jobs.values())


# -- one job -----------------------------------------------------------------------------


def run_job(job: Job, out: Path) -> dict[str, Any]:
    """Run ``job``; returns its result (final return, curve, random return, wall time)."""
    import torch
    from baselines import random_return

    from rlhf.config import load_config

    cfg = load_config(job.config,
                      [*job.overrides, f"seed={job.seed}",
                       f"run_dir={out / 'runs' / job.name}"])
    t0, c0 = time.perf_counter(), time.process_time()
    if job.kind == "rlhf":
        curve, final, timesteps, labels = _rlhf(cfg)
    else:
        curve, final, timesteps = _ppo(cfg)
        labels = 0
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {**asdict(job), "name": job.name, "final_return": final,
            "random_return": random_return(cfg.env, 10, _score(cfg), action_seed=cfg.seed,
                                           first_reset_seed=cfg.seed + RANDOM_FLOOR),
            "timesteps": timesteps, "labels": labels,
            "label_budget": cfg.loop.total_labels if job.kind == "rlhf" else 0,
            "wall_s": wall, "cpu_s": cpu, "torch_threads": torch.get_num_threads(),
            "curve": curve}


def _score(cfg):
    from rlhf.teachers import load_score_fn

    return None if cfg.teacher.score is None else load_score_fn(cfg.teacher.score)


def _eval_env(cfg, train_env):
    """An evaluation env: the true reward, or the scripted score where the task has one."""
    from rlhf.agent import eval_env
    from rlhf.scores import score_vec_env

    score = _score(cfg)
    if score is None:
        return eval_env(cfg, train_env)
    return score_vec_env(cfg, score, n_envs=1, seed=cfg.seed + LOOP_EVAL, train_env=train_env,
                         evaluation=True)


def _rlhf(cfg) -> tuple[list[list[float]], float, int, int]:
    from rlhf.agent import load_obs_rms, load_trained_agent
    from rlhf.evaluate import true_returns
    from rlhf.loop import run
    from rlhf.rundir import OBS_RMS, RunDir

    result = run(cfg, force=True, progress=False)
    curve = [[m["timesteps"], m["labels"], m["eval_return"]] for m in result.metrics
             if m["eval_return"] == m["eval_return"]]  # not NaN
    final = result.final_return
    if cfg.teacher.score is not None:
        # The loop evaluates the env's own reward; a scripted task is judged by its score.
        latest = RunDir.open(result.run_dir).latest_checkpoint()
        env = _eval_env(cfg, None)
        load_obs_rms(env, latest / OBS_RMS)
        agent = load_trained_agent(cfg, env, latest)
        final = float(true_returns(agent, env, cfg.eval.episodes).mean())
        env.close()
        curve = [[result.timesteps, result.labels, final]]
    return curve, final, result.timesteps, result.labels


def _ppo(cfg) -> tuple[list[list[float]], float, int]:
    """SB3 PPO on the true reward (or the scripted score), the RLHF run's settings and
    timesteps, evaluated at the timesteps where the RLHF loop evaluates."""
    from stable_baselines3.common.callbacks import BaseCallback

    from rlhf.agent import make_agent, make_env_stack, set_learn_horizon
    from rlhf.evaluate import true_returns
    from rlhf.loop import eval_iterations, iteration_ends
    from rlhf.scores import score_vec_env

    lp = cfg.loop
    score = _score(cfg)
    if score is None:
        env = make_env_stack(cfg).agent_env  # no reward model set: the env's own reward
    else:
        env = score_vec_env(cfg, score, n_envs=cfg.env.n_envs, seed=cfg.seed)
    agent = make_agent(cfg.agent, env, cfg.seed, total_timesteps=lp.total_timesteps)
    n_steps = getattr(agent, "n_steps", 1) * env.num_envs  # off-policy: one vector step
    ends = iteration_ends(lp.total_timesteps, n_steps, lp.iterations)
    points = [ends[it] for it in eval_iterations(lp.iterations, cfg.eval.every)]
    curve: list[list[float]] = []

    def evaluate() -> float:
        e = _eval_env(cfg, env)
        try:
            return float(true_returns(agent, e, cfg.eval.episodes).mean())
        finally:
            e.close()

    class EvalAt(BaseCallback):
        def _on_rollout_start(self) -> None:  # the policy has trained on the last rollout
            t = self.model.num_timesteps
            if points and t >= points[0] and (not curve or curve[-1][0] < t):
                points.pop(0)
                curve.append([t, 0, evaluate()])

        def _on_step(self) -> bool:
            return True

    set_learn_horizon(agent, ends[-1])  # the rate falls as in the RLHF run: over total
    agent.learn(ends[-1], callback=EvalAt())
    final = evaluate()
    if not curve or curve[-1][0] < agent.num_timesteps:
        curve.append([agent.num_timesteps, 0, final])
    else:
        curve[-1][2] = final
    env.close()
    return curve, final, int(agent.num_timesteps)


# -- the suite ---------------------------------------------------------------------------


def run_suite(jobs: list[Job], out: Path, parallel: int, threads: int = 1) -> list[str]:
    """Run the jobs without a result yet, ``parallel`` at a time; returns the failed ones."""
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    todo = []
    for j in jobs:
        path = results / f"{j.name}.json"
        if not path.exists():
            todo.append(j)
            continue
        done = json.loads(path.read_text())
        if (done["config"], done["overrides"]) != (j.config, j.overrides):
            raise SystemExit(f"efficiency: {path} was run with other settings "
                             f"({done['config']} {' '.join(done['overrides'])}); "
                             "use another --out for these")
    print(f"efficiency: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, "
          f"{len(todo)} to run, {parallel} at a time; results in {results}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    running: list[tuple[Job, subprocess.Popen, float]] = []
    failed: list[str] = []
    try:
        _run_all(todo, running, failed, out, parallel, env)
    finally:  # Ctrl-C or SIGTERM: stop the jobs too (a rerun starts them over)
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if failed:
        print(f"efficiency: {len(failed)} jobs failed: {', '.join(failed)}", flush=True)
    return failed


def _run_all(todo: list[Job], running: list, failed: list[str], out: Path, parallel: int,
             env: dict[str, str]) -> None:
    while todo or running:
        while todo and len(running) < parallel:
            job = todo.pop(0)
            log = (out / "logs").joinpath(f"{job.name}.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("w") as f:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--run-job", json.dumps(asdict(job)),
                     "--out", str(out)], stdout=f, stderr=subprocess.STDOUT, env=env)
            running.append((job, proc, time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            job, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            ok = proc.returncode == 0
            if not ok:
                failed.append(job.name)
            print(f"efficiency: {job.name} {'done' if ok else 'FAILED'} in "
                  f"{time.perf_counter() - t0:.0f} s (log: {out / 'logs' / job.name}.log)",
                  flush=True)


def load_results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]


def _spread(values: list[float], digits: int = 1) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f} – {max(values):.{digits}f})"


def _reward_model_quality(out: Path, name: str, last: int = 5) -> tuple[float, float] | None:
    """The reward model's Pearson correlation with the true per-step reward on fresh
    rollouts and its held-out label accuracy, each the mean over the run's last ``last``
    iterations (from the run's ``metrics.csv``); None for a PPO job or a missing run."""
    from rlhf.plot import read_curve_csv

    path = out / "runs" / name / "metrics.csv"
    if not path.is_file():
        return None

    def mean(key: str) -> float:
        y = read_curve_csv(path, x="iteration", y=key).y[-last:]
        return float(y.mean()) if len(y) else float("nan")

    return mean("reward_corr"), mean("rm_val_accuracy")


def report(out: Path) -> str:
    """Tables and curves from the finished jobs; writes OUT/report.md and OUT/*.png."""
    from rlhf.io import atomic_write_text

    rows = load_results(out)
    ppo = {(r["task"], r["seed"]): r for r in rows if r["kind"] == "ppo"}
    quality = {r["name"]: q for r in rows if (q := _reward_model_quality(out, r["name"]))}
    lines = [f"# Label efficiency ({time.strftime('%Y-%m-%d')})", "", _machine(), ""]

    def normalised(r: dict[str, Any]) -> float | None:
        base = ppo.get((r["task"], r["seed"]))
        if base is None or base["final_return"] == r["random_return"]:
            return None
        return ((r["final_return"] - r["random_return"])
                / (base["final_return"] - r["random_return"]))

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["experiment"], r["task"], r["group"]), []).append(r)
    lines += ["| experiment | task | setting | labels | timesteps | seeds | return: median "
              "(min – max) | true-reward agent | normalised: median (min – max) | reward "
              "corr | val accuracy | wall s (median) | CPU s (median) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (exp, task, group), rs in sorted(groups.items(), key=lambda kv: _natural(kv[0])):
        rs.sort(key=lambda r: r["seed"])
        norm = [n for n in map(normalised, rs) if n is not None]
        base = [ppo[(task, r["seed"])]["final_return"] for r in rs if (task, r["seed"]) in ppo]
        qs = [quality[r["name"]] for r in rs if r["name"] in quality]
        lines.append(
            f"| {exp} | {task} | {group} | {rs[0]['labels'] or '–'} | {rs[0]['timesteps']} "
            f"| {' '.join(str(r['seed']) for r in rs)} "
            f"| {_spread([r['final_return'] for r in rs])} "
            f"| {_spread(base) if group != 'ppo' else '–'} "
            f"| {_spread(norm, 2) if group != 'ppo' else '–'} "
            f"| {_spread([q[0] for q in qs], 2) if qs else '–'} "
            f"| {_spread([q[1] for q in qs], 2) if qs else '–'} "
            f"| {statistics.median(r['wall_s'] for r in rs):.0f} "
            f"| {_median_or_dash([r.get('cpu_s') for r in rs])} |")
    lines += ["", "Reward corr: Pearson correlation of the ensemble's mean reward with the "
              "true per-step reward on fresh rollouts; val accuracy: the reward model's "
              "accuracy on held-out labels; both the mean over the run's last 5 iterations.",
              ""]
    lines += _curves(rows, out)
    lines += ["", *_sweep_summary(rows, ppo), *_queries_summary(rows, quality),
              *_crowd_summary(rows, out)]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", text)
    return text


def _curves(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Per task, the main experiment's curves (RLHF and PPO, seeds as median and band)
    against timesteps and RLHF's against labels: ``TASK-timesteps.png``,
    ``TASK-labels.png``. Each other experiment gets its own pair, ``TASK-EXP-*.png``, with
    the main runs of the same seeds for reference."""
    from rlhf.plot import Curve, plot_curves

    lines = []
    for task in sorted({r["task"] for r in rows}):
        ours = [r for r in rows if r["task"] == task]
        for exp in ["main", *sorted({r["experiment"] for r in ours} - {"main"})]:
            members = [r for r in ours if r["experiment"] == exp]
            if exp != "main":
                seeds = {r["seed"] for r in members}
                members += [r for r in ours if r["experiment"] == "main" and r["seed"] in seeds]
            stem = task if exp == "main" else f"{task}-{exp}"
            for axis, x in (("timesteps", 0), ("labels", 1)):
                curves = [Curve(r["group"], *_xy(r["curve"], x))
                          for r in sorted(members, key=lambda r: (r["group"], r["seed"]))
                          if axis == "timesteps" or r["kind"] != "ppo"]
                if curves:
                    png = plot_curves(curves, out / f"{stem}-{axis}.png", axis,
                                      title=f"{task}, {exp}: true return against {axis}")
                    lines.append(f"![{task} {exp} against {axis}]({png.name})")
    return lines


def _natural(key: tuple[str, ...]) -> tuple:
    """Sort key reading digit runs as numbers: labels200 before labels1400."""
    return tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k))
                 for k in key)


def _median_or_dash(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.0f}" if known else "–"


def _xy(curve: list[list[float]], x: int) -> tuple[Any, Any]:
    import numpy as np

    c = np.asarray(curve, dtype=np.float64).reshape(-1, 3)
    return c[:, x], c[:, 2]


def _sweep_summary(rows: list[dict[str, Any]], ppo: dict) -> list[str]:
    """Labels needed to reach 80% of true-reward agent's return (normalised 0.8): the first
    budget where the sweep's median normalised score crosses 0.8, linearly interpolated;
    the same for the ``fewer`` experiment's budgets with and without SURF."""
    out = []
    seeds = sorted({r["seed"] for r in rows if r["experiment"] == "sweep"})
    line = _budget_line(rows, ppo, seeds, lambda g: g.startswith("labels") or g == "rlhf",
                        "label sweep")
    out += [line] if line else []
    seeds = sorted({r["seed"] for r in rows if r["experiment"] == "fewer"})
    for name, plain in (("without SURF", True), ("with SURF (pseudo-labels and crops)", False)):
        line = _budget_line(rows, ppo, seeds,
                            (lambda g: g.startswith("labels")) if plain
                            else (lambda g: g.startswith("surf")), f"few labels, {name}")
        out += [line] if line else []
    return out


def _budget_line(rows: list[dict[str, Any]], ppo: dict, seeds: list[int], in_group,
                 title: str) -> str | None:
    """One summary line: the median normalised score at each label budget of HalfCheetah's
    runs whose group ``in_group`` accepts (on ``seeds``), and the labels for 80%."""
    points: dict[int, list[float]] = {}
    for r in rows:
        if (r["task"] != "halfcheetah" or r["kind"] != "rlhf" or not in_group(r["group"])
                or r["seed"] not in seeds):
            continue
        base = ppo.get((r["task"], r["seed"]))
        if base is not None and base["final_return"] != r["random_return"]:
            points.setdefault(r.get("label_budget", r["labels"]), []).append(
                (r["final_return"] - r["random_return"])
                / (base["final_return"] - r["random_return"]))
    if len(points) < 2:
        return None
    xs = sorted(points)
    ys = [statistics.median(points[x]) for x in xs]
    table = ", ".join(f"{x}: {y:.2f}" for x, y in zip(xs, ys, strict=True))
    return (f"HalfCheetah {title} (seeds {' '.join(map(str, seeds))}), median normalised "
            f"score by labels: {table}. "
            f"80% of true-reward agent: {labels_to_reach(xs, ys, 0.8)}.")


def labels_to_reach(xs: list[int], ys: list[float], level: float) -> str:
    """Where the normalised scores ``ys`` at label budgets ``xs`` (ascending) first cross
    ``level``, linearly interpolated; a bound when the smallest budget already reaches it."""
    if ys[0] >= level:
        return f"{xs[0]} labels or fewer (the smallest budget measured already reaches it)"
    need = next((x0 + (level - y0) * (x1 - x0) / (y1 - y0)
                 for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:], strict=False)
                 if y0 < level <= y1), None)
    return "not reached at any budget measured" if need is None else f"about {need:.0f} labels"


def _queries_summary(rows: list[dict[str, Any]],
                     quality: dict[str, tuple[float, float]]) -> list[str]:
    """The query-selection ablation in one line: each strategy's median final return and
    reward correlation over the seeds it ran (``quality``: by job name, see
    ``_reward_model_quality``)."""
    queried = [r for r in rows if r["experiment"] == "queries"]
    if not queried:
        return []
    labels, asked_seeds = queried[0]["label_budget"], {r["seed"] for r in queried}
    parts = []
    for strategy in STRATEGIES:
        rs = [r for r in queried
              if r["group"].removesuffix(str(r.get("label_budget", ""))) == strategy]
        if not rs and strategy == PRESET_STRATEGY:  # the plain run at this budget
            rs = [r for r in rows if r["task"] == "halfcheetah" and r["kind"] == "rlhf"
                  and r["group"] == f"labels{labels}" and r["seed"] in asked_seeds]
        if not rs:
            continue
        qs = [quality[r["name"]] for r in rs if r["name"] in quality]
        corr = f", reward corr {_spread([q[0] for q in qs], 2)}" if qs else ""
        seeds = " ".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
        late = _spread([statistics.fmean(c[2] for c in r["curve"][-3:]) for r in rs])
        parts.append(f"{strategy} {_spread([r['final_return'] for r in rs])} (mean of the "
                     f"last 3 evaluations {late}){corr} (seeds {seeds})")
    if not parts:
        return []
    return ["", f"Query selection at {labels} labels, final return: " + "; ".join(parts) + "."]


def _crowd_summary(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Per crowd run: does ``rlhf annotators``' table single out the careless member (the
    lowest agreement with the true return), and, with reliability weighting, the flip
    rates the reward model estimated (from the run's status.json)."""
    from rlhf.annotators import annotator_stats
    from rlhf.store import Store

    careless = f"sim-{CROWD_CARELESS}"
    lines = []
    for r in sorted((r for r in rows if r["experiment"] == "crowd"),
                    key=lambda r: (r["group"], r["seed"])):
        run = out / "runs" / r["name"]
        if not (run / "store.sqlite").is_file():
            continue
        with Store(run / "store.sqlite", readonly=True) as store:
            stats = annotator_stats(store.answered())
        gold = {s.annotator: s.gold_agreement for s in stats if s.gold_agreement is not None}
        lowest = min(gold, key=gold.__getitem__) if gold else None
        rates = json.loads((run / "status.json").read_text()).get("annotator_flip_rates")
        text = ", ".join(f"{k} {v:.0%}" for k, v in sorted(gold.items()))
        flips = (", estimated flip rates " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                       sorted(rates.items()))) if rates else ""
        verdict = "the careless one" if lowest == careless else "NOT the careless one"
        lines.append(f"- {r['name']}: agreement with the true return {text}; lowest "
                     f"{lowest} ({verdict}){flips}")
    return ["", "Five simulated annotators (rlhf annotators on each run's store):", *lines] \
        if lines else []


def _machine() -> str:
    import gymnasium
    import stable_baselines3
    import torch

    return (f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"
            f"; Python {platform.python_version()}, torch {torch.__version__}, "
            f"stable-baselines3 {stable_baselines3.__version__}, gymnasium "
            f"{gymnasium.__version__}.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="default 0 1 2 (--quick: 0)")
    p.add_argument("--quick", action="store_true",
                   help="one seed, small budgets: a sanity check in minutes")
    p.add_argument("--jobs", type=int, default=1, help="jobs run at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--out", default=None,
                   help="default runs/efficiency (--quick: runs/efficiency-quick)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every job (e.g. eval.episodes=20)")
    p.add_argument("--groups", nargs="+", default=None, metavar="GROUP",
                   help="run only the planned jobs of these groups (e.g. mistake0.3 ppo)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--run-job", help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out or ("runs/efficiency-quick" if args.quick else "runs/efficiency"))
    if args.run_job:  # torch takes its thread count from OMP_NUM_THREADS (run_suite's)
        job = Job(**json.loads(args.run_job))
        result = run_job(job, out)
        from rlhf.io import atomic_write_text

        atomic_write_text(out / "results" / f"{job.name}.json", json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
        return
    if args.jobs < 1:
        p.error(f"--jobs: must be >= 1, got {args.jobs}")
    if args.threads < 1:
        p.error(f"--threads: must be >= 1, got {args.threads}")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    failed: list[str] = []
    if not args.report_only:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the jobs too
        jobs = plan(args.experiments, args.tasks, seeds, args.quick, args.set)
        if args.groups is not None:
            unknown = sorted(set(args.groups) - {j.group for j in jobs})
            if unknown:
                p.error(f"--groups: {', '.join(unknown)} not among the planned groups "
                        f"({', '.join(sorted({j.group for j in jobs}))})")
            jobs = [j for j in jobs if j.group in args.groups]
        failed = run_suite(jobs, out, args.jobs, args.threads)
    print(report(out))
    if failed:
        sys.exit(1)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
