#!/usr/bin/env python
"""Benchmarks of the custom-environment work; numbers go in BENCHMARKS.md.

    python scripts/bench_envs.py score [CONFIG] [--seeds 0 1 2] [key=value ...]
        RLHF from the config's simulated labels (default configs/reach2d.yaml, 300 labels)
        against PPO trained directly on the config's scripted score (teacher.score), same
        agent settings and timesteps; both policies scored by the scripted score.
    python scripts/bench_envs.py check-env [ENV ...]
        Wall time of ``rlhf check-env`` (the CLI, in a fresh process) on MuJoCo envs.
    python scripts/bench_envs.py cnn [--repeats 7]
        EnsembleCNN: grouped convolution vs torch.func.vmap vs a per-member loop, one
        training step and one shared-input forward, interleaved on a shared machine.

Run it with OMP_NUM_THREADS=1 on a busy machine: two torch threads spin-waiting on a shared
2-core CPU are slower than one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from baselines import random_return  # noqa: E402

from rlhf.config import Config  # noqa: E402
from rlhf.scores import score_vec_env  # noqa: E402
from rlhf.seeds import CLI_EVAL  # noqa: E402
from rlhf.teachers import ScoreFn, load_score_fn  # noqa: E402

# -- score: RLHF vs PPO on the scripted score ------------------------------------------------


def score_env(cfg: Config, score: ScoreFn, seed: int, obs_rms: Any = None):
    """A VecEnv whose reward is the scripted score (obs normalised like the agent's)."""
    env = score_vec_env(cfg, score, cfg.env.n_envs, seed, evaluation=obs_rms is not None)
    if obs_rms is not None:
        env.obs_rms = obs_rms
    return env


def scripted_return(agent: Any, cfg: Config, score: ScoreFn, episodes: int,
                    obs_rms: Any = None) -> float:
    from stable_baselines3.common.evaluation import evaluate_policy

    one = copy.deepcopy(cfg)
    one.env.n_envs = 1
    env = score_env(one, score, seed=CLI_EVAL, obs_rms=obs_rms)
    returns, _ = evaluate_policy(agent, env, n_eval_episodes=episodes, deterministic=True,
                                 return_episode_rewards=True, warn=False)
    env.close()
    return float(np.mean(returns))


def cmd_score(args: argparse.Namespace) -> None:
    from rlhf.agent import load_trained_agent, make_agent
    from rlhf.config import load_config
    from rlhf.loop import run
    from rlhf.rundir import OBS_RMS, RunDir

    rows = []
    for seed in args.seeds:
        run_dir = Path(args.out) / f"{Path(args.config).stem}-s{seed}"
        cfg = load_config(args.config, [*args.overrides, f"seed={seed}", f"run_dir={run_dir}"])
        if cfg.teacher.score is None:
            raise SystemExit(f"{args.config}: teacher.score is not set; nothing to compare to")
        score = load_score_fn(cfg.teacher.score)
        t0 = time.perf_counter()
        result = run(cfg, force=True, progress=False)
        rlhf_s = time.perf_counter() - t0
        rundir = RunDir.open(result.run_dir)
        latest = rundir.latest_checkpoint()
        env = score_env(cfg, score, seed)
        rlhf_agent = load_trained_agent(cfg, env, latest)
        rms = None
        if cfg.agent.normalize_obs:
            from rlhf.agent import load_obs_rms

            load_obs_rms(env, latest / OBS_RMS)
            rms = env.obs_rms
        rlhf_score = scripted_return(rlhf_agent, cfg, score, args.episodes, rms)
        env.close()

        env = score_env(cfg, score, seed)
        ppo = make_agent(cfg.agent, env, seed, total_timesteps=result.timesteps)
        t0 = time.perf_counter()
        ppo.learn(result.timesteps)
        ppo_s = time.perf_counter() - t0
        ppo_score = scripted_return(ppo, cfg, score, args.episodes,
                                    env.obs_rms if cfg.agent.normalize_obs else None)
        env.close()
        rand = random_return(cfg.env, args.episodes, score, action_seed=0,
                             first_reset_seed=CLI_EVAL)
        row = {"config": args.config, "seed": seed, "labels": result.labels,
               "timesteps": result.timesteps, "rlhf_score": rlhf_score,
               "ppo_on_score": ppo_score, "random": rand,
               "normalised": (rlhf_score - rand) / (ppo_score - rand),
               "rlhf_wall_s": rlhf_s, "ppo_wall_s": ppo_s, "run_dir": str(result.run_dir)}
        rows.append(row)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                          for k, v in row.items()}), flush=True)
    if len(rows) > 1:
        print(json.dumps({k: round(statistics.median(r[k] for r in rows), 2)
                          for k in ("rlhf_score", "ppo_on_score", "random", "normalised")}))


# -- check-env timing ------------------------------------------------------------------------


def cmd_check_env(args: argparse.Namespace) -> None:
    env = {**os.environ}
    for target in args.envs:
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run(["rlhf", "check-env", target], capture_output=True, text=True,
                                 env=env, cwd=args.out)
            walls.append(time.perf_counter() - t0)
        summary = out.stdout.strip().splitlines()[-1]
        print(json.dumps({"env": target, "exit": out.returncode,
                          "wall_s_median": round(statistics.median(walls), 2),
                          "wall_s_min": round(min(walls), 2), "report": summary}), flush=True)


# -- EnsembleCNN: grouped conv vs vmap vs loop -----------------------------------------------


def cmd_cnn(args: argparse.Namespace) -> None:
    from torch import nn
    from torch.func import vmap

    from rlhf.reward.cnn import EnsembleCNN

    torch.manual_seed(0)
    m, n = args.members, args.images
    net = EnsembleCNN(m, (64, 64, 3), False, 1, 2, [64, 64])
    x = torch.rand(m, n, net.in_dim)

    def params() -> dict[str, torch.Tensor]:
        p = {f"w{i}": w for i, w in enumerate(net.weights)}
        p |= {f"b{i}": b for i, b in enumerate(net.biases)}
        p |= {f"hw{i}": w for i, w in enumerate(net.head.weights)}
        p |= {f"hb{i}": b[:, 0] for i, b in enumerate(net.head.biases)}
        return p

    def member(p: dict[str, torch.Tensor], img: torch.Tensor, extra: torch.Tensor):
        h = img
        for i, (_, _, s) in enumerate(net.conv_layers):
            h = nn.functional.leaky_relu(nn.functional.conv2d(h, p[f"w{i}"], p[f"b{i}"],
                                                              stride=s), 0.01)
        h = torch.cat([h.flatten(1), extra], -1)
        last = len(net.head.weights) - 1
        for i in range(last + 1):
            h = h @ p[f"hw{i}"] + p[f"hb{i}"]
            if i < last:
                h = nn.functional.leaky_relu(h, 0.01)
        return h.squeeze(-1)

    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member (M, N, C, H, W) images, in the layout vmap and the loop do best with."""
        img = x[..., : net.pixels].reshape(m, n, 64, 64, 3).permute(0, 1, 4, 2, 3)
        return img.contiguous(), x[..., net.pixels:]

    def vmapped(x: torch.Tensor) -> torch.Tensor:
        img, extra = split(x)
        return vmap(member)(params(), img, extra)

    def loop(x: torch.Tensor) -> torch.Tensor:
        img, extra = split(x)
        p = params()
        return torch.stack([member({k: v[i] for k, v in p.items()}, img[i], extra[i])
                            for i in range(m)])

    torch.testing.assert_close(net(x), vmapped(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net(x), loop(x), rtol=1e-4, atol=1e-5)
    shared = x[0]

    def train_step(fn):
        return lambda: fn(x).sum().backward()

    def infer(fn, inp):
        def go():
            with torch.no_grad():
                fn(inp)
        return go

    cases = {
        "train grouped": train_step(net), "train vmap": train_step(vmapped),
        "train loop": train_step(loop),
        "infer grouped (shared input)": infer(net, shared),
        "infer vmap": infer(vmapped, shared.expand(m, -1, -1)),
        "infer loop": infer(loop, shared.expand(m, -1, -1)),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(json.dumps({"case": name, "members": m, "images_per_member": n,
                          "median_ms": round(statistics.median(ts[1:]) * 1000, 1),
                          "min_ms": round(min(ts[1:]) * 1000, 1),
                          "threads": torch.get_num_threads()}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("score")
    s.add_argument("config", nargs="?", default=str(ROOT / "configs" / "reach2d.yaml"))
    s.add_argument("overrides", nargs="*")
    s.add_argument("--seeds", type=int, nargs="+", default=[0])
    s.add_argument("--episodes", type=int, default=20)
    s.add_argument("--out", default="runs/bench_envs")
    s.set_defaults(fn=cmd_score)
    c = sub.add_parser("check-env")
    c.add_argument("envs", nargs="*", default=[
        "HalfCheetah-v5", "rlhf_envs/HalfCheetahBackward-v0"])
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--out", default=".")
    c.set_defaults(fn=cmd_check_env)
    n = sub.add_parser("cnn")
    n.add_argument("--members", type=int, default=3)
    n.add_argument("--images", type=int, default=400)
    n.add_argument("--repeats", type=int, default=7)
    n.set_defaults(fn=cmd_cnn)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
