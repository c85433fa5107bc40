#!/usr/bin/env python
"""Benchmarks of the reward model and its cost inside RL. Results go in BENCHMARKS.md.

    python scripts/benchmark.py ceiling                 # the machine's matmul ceilings
    python scripts/benchmark.py reward [--members 5]    # batched ensemble vs per-member loops
    python scripts/benchmark.py inference               # reward queries/s for 1-64 envs
    python scripts/benchmark.py overhead [--steps N]    # PPO steps/s: learned vs true reward
    python scripts/benchmark.py adam [CONFIG]           # PPO CPU time: SB3's Adam vs fused
    python scripts/benchmark.py scaling                 # fit time as labels grow
    python scripts/benchmark.py options                 # fit time with robust/crop/pseudo on
    python scripts/benchmark.py efficiency CONFIG [--seeds 0 1 2]   # RLHF vs true-reward PPO
    python scripts/benchmark.py relabel [--sizes 100000 1000000]    # replay-buffer relabel s

Every comparison is measured side by side in one process, each point the median of
``--repeats`` runs; ratios are what to read on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reference_ensemble import (  # noqa: E402
    ReferenceEnsemble,
    reference_pair_loop_step,
    reference_train_step,
)

from rlhf.clips import Clip  # noqa: E402
from rlhf.config import RewardConfig  # noqa: E402
from rlhf.reward.device import cpu_has_native_bf16  # noqa: E402
from rlhf.reward.model import FeatureSpec, RewardModel  # noqa: E402
from rlhf.reward.trainer import RewardTrainer  # noqa: E402

ACTION_DIM = {11: 3, 17: 6, 376: 17}  # Hopper, HalfCheetah, Humanoid


def machine() -> str:
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
            f"threads, {dev}; torch {torch.__version__}, python {platform.python_version()}")


def timed(fn: Callable[[], None], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def emit(row: dict, digits: int = 2) -> None:
    """Print one result row as a JSON line, floats rounded."""
    print(json.dumps({k: round(v, digits) if isinstance(v, float) else v
                      for k, v in row.items()}), flush=True)


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# -- ceilings ------------------------------------------------------------------------------


def ceilings(device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Measured peak GFLOP/s of a large matmul (fp32; bf16 where the device multiplies bf16
    natively: emulated, one 2048x2048 product takes about a minute), and GB/s of a copy."""
    out = {}
    n = 4096 if device.type == "cuda" else 2048
    dtypes = [("fp32", torch.float32)]
    if device.type == "cuda" or cpu_has_native_bf16():
        dtypes.append(("bf16", torch.bfloat16))
    for name, dtype in dtypes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        k = 20 if device.type == "cuda" else 5
        t = timed(lambda a=a, b=b, k=k: [a @ b for _ in range(k)], repeats, _sync(device))
        out[f"matmul_{name}_gflops"] = 2 * n**3 * k / t / 1e9
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), repeats, _sync(device))
    out["copy_gbps"] = 2 * x.numel() / t / 1e9
    return out


# -- reward model training -----------------------------------------------------------------


def synthetic_trainer(members: int, clip_length: int, obs_dim: int, hidden: int,
                      n_pairs: int, device: str, batch: int, seed: int = 0,
                      precision: str = "auto", **cfg_kwargs) -> RewardTrainer:
    """A trainer holding ``n_pairs`` random labelled pairs over 2 * n_pairs random clips."""
    import gymnasium as gym

    rng = np.random.default_rng(seed)
    act_dim = ACTION_DIM.get(obs_dim, 4)
    spec = FeatureSpec.from_spaces(gym.spaces.Box(-1, 1, (obs_dim,)),
                                   gym.spaces.Box(-1, 1, (act_dim,)))
    cfg = RewardConfig(ensemble=members, hidden=[hidden, hidden], device=device,
                       batch_size=batch, precision=precision, **cfg_kwargs)
    model = RewardModel(spec, members, cfg.hidden, seed=seed)
    trainer = RewardTrainer(model, cfg, clip_length, seed=seed)
    n_clips = min(2 * n_pairs, 4000)
    clips = {i: Clip(obs=rng.normal(size=(clip_length, obs_dim)).astype(np.float32),
                     actions=rng.normal(size=(clip_length, act_dim)).astype(np.float32),
                     rewards=np.zeros(clip_length), dones=np.zeros(clip_length, bool),
                     last_obs=np.zeros(obs_dim, np.float32), id=i) for i in range(n_clips)}
    pairs = rng.integers(0, n_clips, (n_pairs, 2))
    mu = rng.integers(0, 2, n_pairs).astype(np.float32)
    trainer.sync(pairs, mu, clips)
    if trainer.cfg.pseudo_ratio:
        trainer.set_unlabelled(list(clips.values())[-trainer.cfg.pseudo_clips:])
    return trainer


def bench_reward_point(members: int, clip_length: int, obs_dim: int, hidden: int,
                       device: torch.device, batch: int, repeats: int, steps: int,
                       compare: tuple[str, ...] = ("loop", "naive"),
                       precision: str = "auto") -> dict[str, float]:
    trainer = synthetic_trainer(members, clip_length, obs_dim, hidden, 2000, str(device), batch,
                                precision=precision)
    n = len(trainer.data)
    boot = torch.randint(n, (members, n), device=device)
    t_batched = timed(lambda: trainer.train_steps(steps, boot), repeats, _sync(device))
    flops_step = 3 * trainer.model.net.flops_per_input() * members * batch * 2 * clip_length
    row = {
        "members": members, "clip": clip_length, "obs": obs_dim, "hidden": hidden,
        "batch": batch,
        "pairs_per_s": batch * steps / t_batched,
        "member_pairs_per_s": members * batch * steps / t_batched,
        "clip_steps_per_s": members * batch * 2 * clip_length * steps / t_batched,
        "gflops": flops_step * steps / t_batched / 1e9,
    }
    # The per-member references, slowest first: "loop" also loops over the minibatch's
    # pairs (the most used peer library's way), "naive" batches the pairs of each member.
    references = {"loop": reference_pair_loop_step, "naive": reference_train_step}
    for name in (r for r in references if r in compare):
        ref = ReferenceEnsemble(trainer.model.net).to(device)
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in ref.members]
        feats = trainer.data.features.view()  # already standardised
        pairs, mu = trainer.data.pairs.view(), trainer.data.mu.view()

        def ref_steps(step=references[name], ref=ref, opts=opts, feats=feats, pairs=pairs,
                      mu=mu) -> None:
            for m, (member, opt) in enumerate(zip(ref.members, opts, strict=True)):
                for _ in range(steps):
                    idx = boot[m, torch.randint(n, (batch,), device=device)]
                    step(member, opt, feats, pairs, mu, idx)

        t_ref = timed(ref_steps, repeats, _sync(device))
        row[f"{name}_pairs_per_s"] = batch * steps / t_ref
        row[f"speedup_vs_{name}"] = t_ref / t_batched
    if device.type == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def cmd_reward(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    grid = [(m, t, o, h) for h in args.hidden for o in args.obs for t in args.clip
            for m in args.members]
    for m, t, o, h in grid:
        row = bench_reward_point(m, t, o, h, device, args.batch, args.repeats, args.steps,
                                 compare=tuple(args.compare), precision=args.precision)
        rows.append(row)
        emit(row, 2)
    return rows


# -- inference -----------------------------------------------------------------------------


def cmd_inference(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    for obs_dim in args.obs:
        trainer = synthetic_trainer(args.members[0], 25, obs_dim, args.hidden[0], 50,
                                    str(device), 16)
        model = trainer.model.eval()
        act_dim = ACTION_DIM.get(obs_dim, 4)
        for n_envs in (1, 4, 16, 64):
            obs = np.random.default_rng(0).normal(size=(n_envs, obs_dim)).astype(np.float32)
            act = np.zeros((n_envs, act_dim), np.float32)
            k = 200
            fn = model.reward_fn()  # the env loop's path (NumPy on the CPU)
            t = timed(lambda o=obs, a=act, k=k, f=fn: [f(o, a) for _ in range(k)],
                      args.repeats)
            t_torch = timed(lambda o=obs, a=act, k=k, m=model: [m.reward(o, a)
                                                               for _ in range(k)], args.repeats)
            row = {"obs": obs_dim, "members": model.members, "hidden": model.hidden[0],
                   "envs": n_envs, "calls_per_s": k / t, "rewards_per_s": k * n_envs / t,
                   "us_per_call": 1e6 * t / k, "torch_us_per_call": 1e6 * t_torch / k}
            rows.append(row)
            emit(row, 2)
    return rows


# -- relabelling a replay buffer (off-policy agents) ----------------------------------------


def cmd_relabel(args: argparse.Namespace) -> list[dict]:
    """Seconds to relabel an SB3 replay buffer of ``--sizes`` transitions (HalfCheetah's
    shapes: obs 17, action 6) with an ensemble, as an off-policy run does after each fit."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    from rlhf.replay import relabel

    obs_dim, act_dim = 17, 6
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act_space = spaces.Box(-1, 1, (act_dim,), np.float32)
    spec = FeatureSpec.from_spaces(obs_space, act_space)
    rows = []
    for members in args.members:
        for hidden in args.hidden:
            model = RewardModel(spec, members, [hidden] * args.layers, seed=0).to(args.device)
            model.eval()
            for size in args.sizes:
                buf = ReplayBuffer(size, obs_space, act_space, device="cpu", n_envs=1)
                rng = np.random.default_rng(0)
                buf.observations[:] = rng.normal(size=buf.observations.shape)
                buf.actions[:] = rng.uniform(-1, 1, size=buf.actions.shape)
                buf.full = True
                t = timed(lambda b=buf, m=model: relabel(b, m), args.repeats,
                          _sync(torch.device(args.device)))
                row = {"transitions": size, "members": members, "hidden": hidden,
                       "layers": args.layers, "device": args.device, "seconds": t,
                       "transitions_per_s": size / t}
                rows.append(row)
                emit(row, 3)
                del buf
    return rows


# -- scaling -------------------------------------------------------------------------------


def cmd_scaling(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    for n_labels in (100, 300, 1000, 3000, 10000):
        trainer = synthetic_trainer(args.members[0], 50, 17, args.hidden[0], n_labels,
                                    str(device), 64)
        t = timed(lambda tr=trainer: tr.fit(), args.repeats, _sync(device))
        steps = max(trainer.cfg.min_steps, math.ceil(trainer.cfg.epochs * n_labels * 0.8 / 64))
        row = {"labels": n_labels, "fit_seconds": t, "steps": steps,
               "seconds_per_label": t / n_labels}
        rows.append(row)
        emit(row, 4)
    return rows


OPTIONS = {"plain": {}, "robust": {"robust": True}, "crop 10": {"crop_steps": 10},
           "pseudo 1:1": {"pseudo_ratio": 1}, "all three": {
               "robust": True, "crop_steps": 10, "pseudo_ratio": 1}}


def cmd_options(args: argparse.Namespace) -> list[dict]:
    """Seconds per reward-model fit with each of issue 19's options against none, side by
    side: 700 labels of HalfCheetah's shapes (obs 17, clip 50), --members[0] members of
    --hidden[0] x 2; the first (warm-up) fit is not timed, so the robust screening runs in
    every timed one."""
    device = torch.device(args.device)
    rows, base = [], None
    for name, opts in OPTIONS.items():
        trainer = synthetic_trainer(args.members[0], 50, 17, args.hidden[0], 700,
                                    str(device), 64, precision=args.precision, **opts)
        t = timed(lambda tr=trainer: tr.fit(), args.repeats, _sync(device))
        base = base or t
        row = {"option": name, "fit_seconds": t, "vs_plain": t / base}
        rows.append(row)
        emit(row, 3)
    return rows


# -- overhead of the learned reward inside PPO ---------------------------------------------


def cmd_overhead(args: argparse.Namespace) -> list[dict]:
    """PPO steps/s on the true reward, on the learned reward per step (the CPU default) and
    per rollout (``reward.relabel: rollout``, the GPU default), side by side."""
    from rlhf.agent import make_agent, make_env_stack
    from rlhf.config import load_config
    from rlhf.wrappers import RelabelRollout

    modes = ("true", "learned", "rollout")
    rows = []
    for env_id in args.envs:
        cfg = load_config(overrides=[
            f"env.id={env_id}", "env.n_envs=4", "agent.kwargs.n_steps=512",
            "agent.kwargs.batch_size=64", "agent.kwargs.n_epochs=10",
            f"reward.device={args.device}"])
        results: dict[str, list[float]] = {m: [] for m in modes}
        for rep in range(args.repeats):
            for mode in modes:  # alternate so drift hits all alike
                stack = make_env_stack(cfg, deferred=mode == "rollout")
                agent = make_agent(cfg.agent, stack.agent_env, seed=rep,
                                   total_timesteps=cfg.loop.total_timesteps)
                callback = None
                if mode != "true":
                    spec = FeatureSpec.from_spaces(stack.venv.observation_space,
                                                   stack.venv.action_space)
                    model = RewardModel(spec, 3, [64, 64], seed=rep).to(args.device)
                    stack.learned.set_reward_fn(model.reward_fn())  # as the loop does
                    if mode == "rollout":
                        callback = RelabelRollout(stack.learned)
                t0 = time.perf_counter()
                agent.learn(args.steps, callback=callback)
                results[mode].append(args.steps / (time.perf_counter() - t0))
                stack.close()
        med = {m: statistics.median(v) for m, v in results.items()}
        row = {"env": env_id, "true_steps_per_s": med["true"],
               "learned_steps_per_s": med["learned"], "ratio": med["learned"] / med["true"],
               "rollout_steps_per_s": med["rollout"],
               "rollout_ratio": med["rollout"] / med["true"], "runs": args.repeats}
        rows.append(row)
        emit(row, 3)
    return rows


def cmd_adam(args: argparse.Namespace) -> list[dict]:
    """CPU seconds of PPO on the true reward (rollouts and updates) for ``--timesteps``
    steps of a preset, with SB3's default Adam and with the fused kernel rlhf gives it
    (``rlhf.agent.FUSED_ADAM``), side by side on one torch thread, each the median of
    ``--repeats`` runs."""
    import dataclasses

    from rlhf.agent import FUSED_ADAM, make_agent, make_env_stack
    from rlhf.config import load_config

    cfg = load_config(args.config or "configs/halfcheetah.yaml", list(args.overrides))
    policy_kwargs = dict(cfg.agent.kwargs.get("policy_kwargs") or {})
    unfused = {k: v for k, v in FUSED_ADAM.items() if k != "fused"}  # SB3's own settings
    sb3 = dataclasses.replace(cfg.agent, kwargs={
        **cfg.agent.kwargs, "policy_kwargs": {**policy_kwargs, "optimizer_kwargs": unfused}})
    results: dict[str, list[float]] = {"sb3": [], "fused": []}
    modes = [("sb3", sb3), ("fused", cfg.agent)]
    for rep in range(args.repeats):
        for mode, agent_cfg in modes[::1 - 2 * (rep % 2)]:  # alternate which goes first
            stack = make_env_stack(cfg)  # no reward model set: the true reward
            agent = make_agent(agent_cfg, stack.agent_env, seed=rep,
                               total_timesteps=cfg.loop.total_timesteps)
            t0 = time.process_time()
            agent.learn(args.timesteps)
            results[mode].append(time.process_time() - t0)
            stack.close()
    med = {m: statistics.median(v) for m, v in results.items()}
    row = {"config": cfg.name, "env": cfg.env.id, "timesteps": args.timesteps,
           "sb3_cpu_s": med["sb3"], "fused_cpu_s": med["fused"],
           "ratio": med["fused"] / med["sb3"],
           "fused_cpu_min_per_1M": med["fused"] / args.timesteps * 1e6 / 60,
           "sb3_cpu_min_per_1M": med["sb3"] / args.timesteps * 1e6 / 60, "runs": args.repeats}
    emit(row, 3)
    return [row]


# -- label efficiency: RLHF against PPO on the true reward ---------------------------------


def cmd_efficiency(args: argparse.Namespace) -> list[dict]:
    """One preset, RLHF and true-reward PPO side by side per seed (scripts/efficiency.py runs
    the whole suite, with curves and a report)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from efficiency import Job, run_job

    rows = []
    out_dir = Path(args.out)
    task = Path(args.config).stem
    for seed in args.seeds:
        r, p = (run_job(Job("main", task, kind, kind, seed, list(args.overrides), args.config),
                        out_dir) for kind in ("rlhf", "ppo"))
        rand = r["random_return"]
        row = {"config": args.config, "seed": seed, "labels": r["labels"],
               "timesteps": r["timesteps"], "rlhf_return": r["final_return"],
               "ppo_return": p["final_return"], "random_return": rand,
               "normalised": (r["final_return"] - rand) / (p["final_return"] - rand),
               "rlhf_wall_s": r["wall_s"], "ppo_wall_s": p["wall_s"],
               "run_dir": str(out_dir / "runs" / Job("main", task, "rlhf", "rlhf", seed,
                                                      config=args.config).name)}
        rows.append(row)
        emit(row, 3)
    if rows:
        med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
        print(json.dumps({"median_rlhf_return": med("rlhf_return"),
                          "median_ppo_return": med("ppo_return"),
                          "median_normalised": med("normalised"),
                          "min_rlhf_return": min(r["rlhf_return"] for r in rows),
                          "max_rlhf_return": max(r["rlhf_return"] for r in rows)}))
    return rows


# -- command line --------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["ceiling", "reward", "inference", "scaling", "options",
                                    "overhead",
                                    "adam", "efficiency", "relabel"])
    p.add_argument("config", nargs="?", help="efficiency, adam: the preset to run")
    p.add_argument("overrides", nargs="*", help="efficiency, adam: key.path=value overrides")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--members", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--clip", type=int, nargs="+", default=[25, 50])
    p.add_argument("--obs", type=int, nargs="+", default=[11, 17, 376])
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 256])
    p.add_argument("--batch", type=int, default=64, help="pairs per member per step")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compare", nargs="*", default=["loop", "naive"], choices=["loop", "naive"],
                   help="reward: the per-member references to time (none: batched only)")
    p.add_argument("--timesteps", type=int, default=10240, help="adam: PPO steps per run")
    p.add_argument("--envs", nargs="+", default=["Pendulum-v1", "HalfCheetah-v5"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                   help="relabel: replay-buffer sizes (transitions)")
    p.add_argument("--layers", type=int, default=3, help="relabel: hidden layers")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    if args.what == "adam":
        torch.set_num_threads(1)  # as each job of scripts/efficiency.py
    print(f"# machine: {machine()}", flush=True)
    device = torch.device(args.device)
    if args.what not in ("efficiency", "adam"):
        print("# ceilings: " + json.dumps({k: round(v, 1)
                                           for k, v in ceilings(device).items()}), flush=True)
    if args.what == "efficiency" and not args.config:
        p.error("efficiency needs a CONFIG, e.g. configs/pendulum.yaml")
    fn = {"ceiling": lambda a: [], "reward": cmd_reward, "inference": cmd_inference,
          "scaling": cmd_scaling, "options": cmd_options, "overhead": cmd_overhead,
          "adam": cmd_adam,
          "efficiency": cmd_efficiency, "relabel": cmd_relabel}
    rows = fn[args.what](args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
