"""The ``rlhf`` command line.

    rlhf train CONFIG [--run-dir DIR] [--seed N] [--force] [key.path=value ...]
    rlhf status RUN_DIR [--json]
    rlhf eval RUN_DIR [--episodes N]

User errors (bad config, unknown env, missing run) print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rlhf.config import ConfigError, load_config
from rlhf.reward.model import RewardModelError
from rlhf.rundir import RunDir, RunDirError
from rlhf.store import Store, StoreError

USER_ERRORS = (ConfigError, RunDirError, StoreError, RewardModelError)


def cmd_train(args: argparse.Namespace) -> int:
    from rlhf.loop import run

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.run_dir is not None:
        overrides.append(f"run_dir={args.run_dir}")
    cfg = load_config(args.config, overrides)
    result = run(cfg, force=args.force, progress=not args.quiet)
    print(f"rlhf: done: {result.timesteps} timesteps, {result.labels} labels, "
          f"final true return {result.final_return:.2f}; run directory {result.run_dir}")
    return 0


def run_status(run_dir: str | Path) -> dict:
    """Live counts from the store plus the trainer's last progress report."""
    run = RunDir.open(run_dir)
    with Store(run.store) as store:
        counts = store.counts()
    status = {**run.read_status(), **counts, "run_dir": str(run.path)}
    status["checkpoints"] = {
        "policy": run.policy.exists(),
        "reward_model": (run.checkpoints / "reward_model.safetensors").exists(),
    }
    return status


def cmd_status(args: argparse.Namespace) -> int:
    status = run_status(args.run_dir)
    if args.json:
        print(json.dumps(status, indent=2, default=float))
        return 0
    ret = status.get("latest_eval_return")
    acc = status.get("reward_model_val_accuracy")
    print(f"{status['run_dir']}: {status.get('timesteps', 0)}/{status.get('total_timesteps', '?')}"
          f" timesteps, {status['labels']}/{status.get('total_labels', '?')} labels "
          f"({status['pending']} pending), {status['clips']} clips, "
          f"true return {'-' if ret is None else f'{ret:.2f}'}, reward-model accuracy "
          f"{'-' if acc is None or math.isnan(acc) else f'{acc:.3f}'}"
          f"{', finished' if status.get('finished') else ''}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rlhf.agent import ALGOS, eval_env
    from rlhf.evaluate import true_returns

    run = RunDir.open(args.run_dir)
    cfg = run.load_config()
    if not run.policy.exists():
        raise RunDirError(f"{run.policy}: no saved policy yet (the run saves one after its "
                          "first iteration)")
    env = eval_env(cfg, obs_rms_path=run.obs_rms, seed=20_000)
    agent = ALGOS[cfg.agent.algo].load(run.policy, device="cpu")
    returns = true_returns(agent, env, args.episodes, deterministic=not args.stochastic)
    env.close()
    result = {"episodes": len(returns), "mean": float(returns.mean()),
              "std": float(returns.std()), "min": float(returns.min()),
              "max": float(returns.max())}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"true return over {len(returns)} episodes: {result['mean']:.2f} "
              f"± {result['std']:.2f} (min {result['min']:.2f}, max {result['max']:.2f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlhf", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an agent from preferences")
    t.add_argument("config", help="YAML config, e.g. configs/pendulum.yaml")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides")
    t.add_argument("--run-dir", help="where the run lives (default runs/<name>-s<seed>-<time>)")
    t.add_argument("--seed", type=int)
    t.add_argument("--force", action="store_true", help="start over in an existing run dir")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("status", help="counts and progress of a run")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    e = sub.add_parser("eval", help="true return of a run's saved policy")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--stochastic", action="store_true", help="sample actions")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except USER_ERRORS as e:
        print(f"rlhf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlhf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
