#!/usr/bin/env python
"""Preferential BO: simple regret against comparisons, per pair strategy and teacher.

    python scripts/tune_benchmark.py                       # everything: 2 problems x 3
                                                           # strategies x 2 teachers x 20 seeds
    python scripts/tune_benchmark.py --quick               # 3 seeds: a few minutes
    python scripts/tune_benchmark.py --report-only         # rebuild report.md from results

Problems (``configs/tune_*.yaml``, each with four parameters): ``reach2d`` (the Reach2D
controller judged by its scripted taste) and ``pendulum`` (the swing-up controller judged
by the env's reward). Strategies: ``eubo``, ``incumbent-random``, ``random``. Teachers:
``oracle`` (always the clip of higher score) and ``mistake`` (the same, answering wrongly
one time in ten, B-Pref's mistake = 0.1).

A job is one tuning run of ``--comparisons`` comparisons (twice that for random pairs, so
that the comparisons they need are measured rather than censored) through ``run_tune``,
exactly as ``rlhf tune`` runs it, with a fresh run directory; the teacher compares the two
sides on the config's ``tune.starts`` start states (Reach2D 4, Pendulum 2), the same for
every pair. After every answer the run's
recommendation (the seen candidate of highest posterior mean) is scored twice:

- by the **teacher's own utility**, what the simulated teacher answers from: the mean
  summed score over the run's scenes (the config's ``tune.starts`` start states of that
  seed), normalised per seed over 256 Sobol points and the seed's recommendations
  (computed and cached when the report is built). This is the regret of the issue's
  target: how far the optimiser is from the best the teacher could have been led to.
- by the **held-out utility**: the mean over 8 episodes from other start states
  (``seed = TUNE_UTILITY + i``, never a pair's start), normalised over 1024 Sobol points
  and every recommendation of every job: whether the setting tuned on a few scenes is
  good elsewhere too.

**Normalised simple regret** is ``(U_max - U(rec)) / (U_max - U_min)``.

Latency (answer -> next pair stored: GP update, acquisition, both rollouts) is read from
a separate 60-comparison EUBO run per problem and seed (``latency`` jobs), at comparisons
45-55; the hyperparameter fit the next answer will need runs while a person watches the
pair (``Step.fit_ahead``) and is reported beside it.

Jobs run ``--jobs`` at a time, one process each (torch with one thread); each writes
``OUT/results/JOB.json`` when done, and a rerun skips finished jobs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "envs"))

STRATEGIES = ("eubo", "incumbent-random", "random")
TEACHERS = {"oracle": [], "mistake": ["teacher.mistake=0.1"]}
UTILITY_EPISODES = 8
SOBOL_POINTS = 1024
TARGET_REGRET = 0.05
SCENE_SOBOL = 256
"""Sobol points per seed that bound the teacher's own utility (its scenes) for its regret."""
LATENCY_COMPARISONS = 60
LATENCY_WINDOW = (45, 55)


@dataclass(frozen=True)
class Problem:
    config: str


PROBLEMS = {"reach2d": Problem("configs/tune_reach2d.yaml"),
            "pendulum": Problem("configs/tune_pendulum.yaml")}


def load(problem: str, overrides: list[str]):
    from rlhf.config import load_config

    return load_config(ROOT / PROBLEMS[problem].config, ["teacher.kind=oracle", *overrides])


class TrueUtility:
    """U(params): the mean summed score of ``UTILITY_EPISODES`` episodes from held-out
    starts (or from ``starts``, reset seeds); memoised by the parameters."""

    def __init__(self, problem: str, starts: list[int] | None = None):
        from rlhf.teachers import load_score_fn
        from rlhf.tune.behaviour import Rollouts, load_behaviour

        cfg = load(problem, [])
        assert cfg.tune is not None
        self.score = load_score_fn(cfg.teacher.score)
        self.rollouts = Rollouts(cfg.env, load_behaviour(cfg.tune.behaviour),
                                 cfg.tune.episode_steps)
        self.cache: dict[str, float] = {}
        from rlhf.seeds import TUNE_UTILITY

        self.starts = starts or [TUNE_UTILITY + i for i in range(UTILITY_EPISODES)]

    def __call__(self, params: dict[str, Any]) -> float:
        key = json.dumps(params, sort_keys=True)
        if key not in self.cache:
            self.cache[key] = float(np.mean([
                np.sum(self.score(self.rollouts.clip(params, s))) for s in self.starts]))
        return self.cache[key]


def teacher_utilities(out: Path, results: dict[str, Any], problem: str, seed: int
                      ) -> dict[str, Any]:
    """The utility the simulated teacher answers from in seed ``seed``'s runs: the mean
    score over the run's own scenes (``pair_starts``, the same for every pair), for
    ``SCENE_SOBOL`` Sobol points and every recommendation of that seed; cached in
    ``OUT/results/PROBLEM-scenes-sSEED.json`` (computed when the report is built)."""
    from torch.quasirandom import SobolEngine

    from rlhf.tune.run import pair_starts
    from rlhf.tune.space import Space

    path = out / "results" / f"{problem}-scenes-s{seed}.json"
    cached = json.loads(path.read_text()) if path.exists() else {"sobol": None, "recs": {}}
    cfg = load(problem, [f"seed={seed}"])
    assert cfg.tune is not None and cfg.tune.same_starts
    utility = TrueUtility(problem, pair_starts(seed, cfg.tune, 0))
    utility.cache.update(cached["recs"])
    if cached["sobol"] is None:
        space = Space(cfg.tune.params)
        unit = SobolEngine(space.dim, scramble=True, seed=1).draw(SCENE_SOBOL).double()
        cached["sobol"] = [utility(space.as_dict(x)) for x in space.from_unit(unit.numpy())]
    before = len(utility.cache)
    for name, r in results.items():
        if name.startswith(f"{problem}-") and name.endswith(f"-s{seed}") and "history" in r \
                and "latency" not in name:
            for h in r["history"]:
                utility(h["params"])
    if len(utility.cache) != before or not path.exists():
        cached["recs"] = utility.cache
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached))
        os.replace(tmp, path)
    return cached


# -- jobs ------------------------------------------------------------------------------------

def job_names(seeds: list[int], problems: list[str]) -> list[str]:
    names = [f"{p}-sobol" for p in problems]
    names += [f"{p}-{s}-{t}-s{seed}" for seed in seeds for p in problems for s in STRATEGIES
              for t in TEACHERS]
    names += [f"{p}-latency-s{seed}" for seed in seeds[:5] for p in problems]
    return names


def run_job(name: str, out: str, comparisons: int) -> str:
    import torch

    torch.set_num_threads(1)
    path = Path(out) / "results" / f"{name}.json"
    if path.exists():
        return f"{name}: done before"
    t0 = time.perf_counter()
    problem, _, rest = name.partition("-")
    utility = TrueUtility(problem)
    if rest == "sobol":
        from torch.quasirandom import SobolEngine

        from rlhf.tune.space import Space

        cfg = load(problem, [])
        assert cfg.tune is not None
        space = Space(cfg.tune.params)
        unit = SobolEngine(space.dim, scramble=True, seed=0).draw(SOBOL_POINTS).double()
        values = [utility(space.as_dict(x)) for x in space.from_unit(unit.numpy())]
        result: dict[str, Any] = {"utilities": values}
    else:
        from rlhf.tune.run import run_tune

        kind, seed = rest.rsplit("-s", 1)
        if kind == "latency":
            strategy, teacher, n = "eubo", "oracle", LATENCY_COMPARISONS
        else:
            strategy, teacher = next((s, kind[len(s) + 1:]) for s in STRATEGIES
                                     if kind.startswith(s + "-"))
            n = comparisons * (2 if strategy == "random" else 1)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load(problem, [*TEACHERS[teacher], f"tune.strategy={strategy}",
                                 f"tune.comparisons={n}", f"seed={seed}",
                                 f"run_dir={tmp}/run"])
            res = run_tune(cfg, force=True, log=lambda _: None)
        result = {"history": [{"comparisons": s.comparisons, "params": s.params,
                               "utility": utility(s.params), "latency": s.latency,
                               "fit_ahead": s.fit_ahead}
                              for s in res.history],
                  "strategy": strategy, "teacher": teacher,
                  "seed": int(seed)}
    result["wall_s"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(json.dumps(result))
    os.replace(tmp_path, path)
    return f"{name}: {result['wall_s']:.0f} s"


# -- report ----------------------------------------------------------------------------------

def regret_curves(results: dict[str, Any], problem: str, budget: int,
                  scenes: dict[int, dict[str, Any]] | None = None
                  ) -> dict[tuple[str, str], np.ndarray]:
    """(strategy, teacher) -> (seeds, budget + 1) normalised regret after m comparisons.

    Without ``scenes``: on the held-out utility, normalised over the Sobol set and every
    recommendation of every job. With ``scenes`` (seed -> ``teacher_utilities``): on the
    utility the seed's teacher answered from, normalised per seed."""
    runs = {k: v for k, v in results.items() if k.startswith(problem + "-") and "history" in v
            and "latency" not in k and "scenes" not in k}
    if scenes is None:
        values = list(results.get(f"{problem}-sobol", {}).get("utilities", []))
        for r in runs.values():
            values += [h["utility"] for h in r["history"]]
        if not values:
            return {}
        bounds = {r["seed"]: (max(values), min(values)) for r in runs.values()}

        def value(r: dict[str, Any], h: dict[str, Any]) -> float:
            return h["utility"]
    else:
        bounds = {s: (max(c["sobol"] + list(c["recs"].values())),
                      min(c["sobol"] + list(c["recs"].values()))) for s, c in scenes.items()}

        def value(r: dict[str, Any], h: dict[str, Any]) -> float:
            return scenes[r["seed"]]["recs"][json.dumps(h["params"], sort_keys=True)]
    curves: dict[tuple[str, str], list[np.ndarray]] = {}
    for r in runs.values():
        u_max, u_min = bounds[r["seed"]]
        m_max = budget * (2 if r["strategy"] == "random" else 1)
        row = np.full(m_max + 1, np.nan)
        for h in r["history"]:
            if h["comparisons"] <= m_max:
                row[h["comparisons"]] = (u_max - value(r, h)) / (u_max - u_min)
        row[0] = 1.0 if np.isnan(row[0]) else row[0]  # no recommendation yet
        for m in range(1, m_max + 1):  # a skipped step keeps the last recommendation
            if np.isnan(row[m]):
                row[m] = row[m - 1]
        curves.setdefault((r["strategy"], r["teacher"]), []).append(row)
    return {k: np.stack(v) for k, v in curves.items()}


def first_below(row: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(row <= target)
    return float(hit[0]) if len(hit) else float("inf")


def fmt_m(x: float, cap: int) -> str:
    return f"> {cap}" if not np.isfinite(x) else f"{x:g}"


def report(out: Path, budget: int, problems: list[str]) -> str:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    lines = ["# Preferential BO benchmark", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; "
             + ", ".join(f"{m} {__import__(m).__version__}" for m in ("torch", "botorch")), "",
             f"Normalised simple regret of the recommendation; {UTILITY_EPISODES}-episode true "
             f"utility; target regret <= {TARGET_REGRET}.", ""]
    marks = [m for m in (5, 10, 15, 20, 25, 30, 40, 60, 80) if m <= 2 * budget]
    for problem in problems:
        seeds = sorted({r["seed"] for k, r in results.items() if k.startswith(problem + "-")
                        and "history" in r and "latency" not in k})
        scenes = {s: teacher_utilities(out, results, problem, s) for s in seeds}
        for title, curves in (
                ("the teacher's own utility (the run's scenes), normalised per seed over "
                 f"{SCENE_SOBOL} Sobol points and the seed's recommendations",
                 regret_curves(results, problem, budget, scenes)),
                (f"the held-out utility ({UTILITY_EPISODES} other starts), normalised over "
                 f"{SOBOL_POINTS} Sobol points and every recommendation",
                 regret_curves(results, problem, budget))):
            if curves:
                lines += regret_table(problem, title, curves, marks)
        lat = [results[k] for k in results if k.startswith(f"{problem}-latency-")]
        lines += latency_lines(results, problem, lat)
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def regret_table(problem: str, title: str, curves: dict[tuple[str, str], np.ndarray],
                 marks: list[int]) -> list[str]:
    lines = [f"## {problem}: regret on {title}", "",
             "| strategy | teacher | seeds | " + " | ".join(f"m={m}" for m in marks)
             + " | comparisons to regret <= 0.05 (median of seeds [q1, q3]) "
             "| median curve reaches 0.05 at |",
             "|---|---|---|" + "---|" * len(marks) + "---|---|"]
    for (strategy, teacher), c in sorted(curves.items()):
        cells = []
        for m in marks:
            if m < c.shape[1]:
                q1, med, q3 = np.percentile(c[:, m], [25, 50, 75])
                cells.append(f"{med:.3f} [{q1:.3f}, {q3:.3f}]")
            else:
                cells.append("")
        cap = c.shape[1] - 1
        hits = np.array([first_below(row, TARGET_REGRET) for row in c])
        q = np.percentile(hits, [25, 50, 75])  # inf where a seed never got there
        med_curve = first_below(np.median(c, axis=0), TARGET_REGRET)
        lines.append(f"| {strategy} | {teacher} | {len(c)} | " + " | ".join(cells)
                     + f" | {fmt_m(q[1], cap)} [{fmt_m(q[0], cap)}, {fmt_m(q[2], cap)}] "
                     f"({int(np.isfinite(hits).sum())}/{len(hits)} seeds reach it) "
                     f"| {fmt_m(med_curve, cap)} |")
    return [*lines, ""]


def latency_lines(results: dict[str, Any], problem: str, lat: list[dict[str, Any]]
                  ) -> list[str]:
    lines = []
    if lat:
        window = [h["latency"] for r in lat for h in r["history"]
                  if h["latency"] is not None
                  and LATENCY_WINDOW[0] <= h["comparisons"] <= LATENCY_WINDOW[1]]
        prep = [h["fit_ahead"] for r in lat for h in r["history"]
                if LATENCY_WINDOW[0] <= h["comparisons"] <= LATENCY_WINDOW[1]]
        lines += [f"Latency, answer -> next pair stored, comparisons "
                  f"{LATENCY_WINDOW[0]}-{LATENCY_WINDOW[1]} ({len(lat)} runs, "
                  f"{len(window)} answers): median {np.median(window):.3f} s, p95 "
                  f"{np.percentile(window, 95):.3f} s, max {max(window):.3f} s. "
                  f"Hyperparameter fit made while the pair is watched: median "
                  f"{np.median(prep):.3f} s, p95 {np.percentile(prep, 95):.3f} s.", ""]
    walls = [v["wall_s"] for k, v in results.items() if k.startswith(problem + "-")
             and "history" in v and "latency" not in k]
    if walls:
        lines += [f"Job wall time: median {np.median(walls):.0f} s over {len(walls)} jobs.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/tune-benchmark")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--comparisons", type=int, default=40)
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="3 seeds")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    seeds = list(range(3 if args.quick else args.seeds))
    if not args.report_only:
        names = [n for n in job_names(seeds, args.problems)
                 if not (out / "results" / f"{n}.json").exists()]
        print(f"{len(names)} jobs to run, {args.jobs} at a time", flush=True)
        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for line in pool.imap_unordered(_run, [(n, str(out), args.comparisons)
                                                   for n in names]):
                print(line, flush=True)
    print(report(out, args.comparisons, args.problems))


def _run(job: tuple[str, str, int]) -> str:
    return run_job(*job)


if __name__ == "__main__":
    main()
