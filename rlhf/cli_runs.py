"""The CLI's commands that read a run, live or finished: ``rlhf status`` (counts and the
trainer's last progress report), ``rlhf eval`` (the saved policy's true return, optionally
on video) and ``rlhf plot`` (learning curves, or the reward model's reliability diagram)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from rlhf.config import ConfigError
from rlhf.reward.model import WEIGHTS
from rlhf.rundir import OBS_RMS, POLICY, RunDir, RunDirError
from rlhf.store import Store


def run_status(run_dir: str | Path) -> dict:
    """Live counts from the store plus the trainer's last progress report."""
    run = RunDir.open(run_dir)
    with Store(run.store_location(), readonly=True) as store:  # a reader: read-only works
        counts = store.counts()
    status = {**run.read_status(), **counts.as_dict(), "run_dir": str(run.path)}
    if status.get("kind") == "tune":
        return status
    latest = run.latest_checkpoint()
    status["checkpoints"] = {
        "latest": None if latest is None else str(latest),
        "policy": latest is not None and (latest / POLICY).exists(),
        "reward_model": latest is not None and (latest / WEIGHTS).exists(),
    }
    return status


def cmd_status(args: argparse.Namespace) -> int:
    status = run_status(args.run_dir)
    if args.json:
        print(json.dumps(status, indent=2, default=float))
        return 0
    if status.get("kind") == "tune":
        from rlhf.tune.result import status_line

        print(status_line(status))
        return 0
    ret = status.get("latest_eval_return")
    acc = status.get("reward_model_val_accuracy")
    distrusted = status.get("reward_model_distrusted")
    print(f"{status['run_dir']}: {status.get('timesteps', 0)}/{status.get('total_timesteps', '?')}"
          f" timesteps, {status['labels']}/{status.get('total_labels', '?')} labels "
          f"({status['pending']} pending), {status['clips']} clips, "
          f"true return {'-' if ret is None else f'{ret:.2f}'}, reward-model accuracy "
          f"{'-' if acc is None or math.isnan(acc) else f'{acc:.3f}'}"
          + ("" if distrusted is None else f", {distrusted} labels distrusted by the last fit")
          + ("" if not status.get("reward_model_distrusted_by") else " ("
             + ", ".join(f"{k} {v}" for k, v in status["reward_model_distrusted_by"].items())
             + ")")
          + ("" if not status.get("annotator_flip_rates") else ", annotator flip rates "
             + " ".join(f"{k} {v:.2f}" for k, v in status["annotator_flip_rates"].items()))
          + (", finished" if status.get("finished") else ""))
    return 0



def cmd_eval(args: argparse.Namespace) -> int:
    from rlhf.agent import eval_env, load_trained_agent
    from rlhf.evaluate import true_returns
    from rlhf.seeds import CLI_EVAL

    video_opts = {"--video-episodes": args.video_episodes, "--video-fps": args.video_fps,
                  "--video-size": args.video_size, "--force": args.force or None}
    if args.video is None and any(v is not None for v in video_opts.values()):
        given = ", ".join(k for k, v in video_opts.items() if v is not None)
        raise ConfigError(f"{given}: these options go with --video OUT (a .gif or .mp4)")
    run = RunDir.open(args.run_dir)
    cfg = run.load_config()
    params = None
    if cfg.tune is not None:  # a tuning run: its recommended parameters' behaviour
        from rlhf.tune.behaviour import load_behaviour
        from rlhf.tune.evaluate import BehaviourAgent
        from rlhf.tune.result import read_best

        params = read_best(run).params
        behaviour = load_behaviour(cfg.tune.behaviour)
        obs_rms = None

        def make_agent(env: Any) -> Any:
            return BehaviourAgent(behaviour, params, env.num_envs)
    else:
        latest = run.latest_checkpoint()
        if latest is None:
            raise RunDirError(f"{run.path}: no checkpoint yet (the run saves one after its "
                              "initial labels)")
        obs_rms = latest / OBS_RMS

        def make_agent(env: Any) -> Any:
            return load_trained_agent(cfg, env, latest)
    if args.video is not None:
        from rlhf.video import VideoRecorder, check_video_path

        # A bad path is refused before any work; nothing of the run is ever written over.
        check_video_path(args.video, force=args.force, protected=[run.path])
    env = eval_env(cfg, obs_rms_path=obs_rms, seed=CLI_EVAL)
    recorder = recording = None
    try:
        if args.video is not None:  # an env without frames: refused before any episode
            recorder = VideoRecorder(cfg, obs_rms_path=obs_rms)
        agent = make_agent(env)
        returns = true_returns(agent, env, args.episodes, deterministic=not args.stochastic)
        if recorder is not None:
            recording = recorder.record(agent, args.video, episodes=args.video_episodes or 1,
                                        deterministic=not args.stochastic,
                                        max_fps=args.video_fps, size=args.video_size,
                                        force=args.force)
    finally:
        env.close()
        if recorder is not None:
            recorder.close()
    result = {"episodes": len(returns), "mean": float(returns.mean()),
              "std": float(returns.std()), "min": float(returns.min()),
              "max": float(returns.max())}
    if params is not None:
        result["params"] = params
    if args.json:
        if recording is not None:
            result["video"] = recording.as_dict()
        print(json.dumps(result))
    else:
        if params is not None:
            print("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()))
        print(f"true return over {len(returns)} episodes: {result['mean']:.2f} "
              f"± {result['std']:.2f} (min {result['min']:.2f}, max {result['max']:.2f})")
        if recording is not None:
            n = len(recording.returns)
            print(f"video: {recording.path}, {n} episode{'s' * (n > 1)} (true return "
                  f"{', '.join(f'{r:.2f}' for r in recording.returns)}), {recording.frames} "
                  f"frames of {recording.width}x{recording.height} at {recording.fps:g} fps")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rlhf.outputs import check_output_path
    from rlhf.plot import plot_curves, run_curve

    if args.name and len(args.name) != len(args.run_dirs):
        raise ConfigError(f"--name: {len(args.name)} names for {len(args.run_dirs)} runs")
    out = check_output_path(args.out, (".png",), "plot", force=args.force,
                            protected=args.run_dirs)
    if args.calibration:
        from rlhf.calibration import held_out_reliability
        from rlhf.plot import plot_reliability

        diagrams = [held_out_reliability(d, name=args.name[i] if args.name else None)
                    for i, d in enumerate(args.run_dirs)]
        plot_reliability(diagrams, out)
        for d in diagrams:
            print(f"rlhf: {d.name}: ECE {d.ece:.3f} on {d.labels} held-out labels "
                  f"({d.checkpoint})")
        print(f"rlhf: saved {out}")
        return 0
    curves = []
    for i, run_dir in enumerate(args.run_dirs):
        run = RunDir.open(run_dir)  # a clear error for a path that is not a run
        curve = run_curve(run.path, x=args.x, name=args.name[i] if args.name else None)
        if not len(curve.x):
            print(f"rlhf: note: {run_dir} has no evaluation yet", file=sys.stderr)
        curves.append(curve)
    plot_curves(curves, out, args.x, title="true return against " + args.x)
    print(f"rlhf: saved {out} ({len(curves)} runs; runs sharing a --name are drawn as their "
          "median and min-max band)")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def add_run_commands(sub: Any) -> None:
    """The ``status``, ``eval`` and ``plot`` subcommands."""
    s = sub.add_parser("status", help="counts and progress of a run")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    e = sub.add_parser("eval", help="true return of a run's saved policy")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=_positive_int, default=10)
    e.add_argument("--stochastic", action="store_true", help="sample actions")
    e.add_argument("--json", action="store_true")
    e.add_argument("--video", metavar="OUT",
                   help="also record the policy to OUT: a .gif, or an .mp4 (needs "
                        "pip install imageio[ffmpeg]); the eval's returns are unchanged")
    e.add_argument("--video-episodes", type=_positive_int, metavar="N",
                   help="episodes to record (default 1; the first ones eval scores)")
    e.add_argument("--video-fps", type=_positive_float, metavar="FPS",
                   help="at most this many frames a second, kept in real time by rendering "
                        "every k-th step (default 15 for a GIF, 30 for an MP4)")
    e.add_argument("--video-size", type=_positive_int, metavar="PIXELS",
                   help="frames at most this long on their long side (default 320 for a "
                        "GIF, the env's own size for an MP4)")
    e.add_argument("--force", action="store_true", help="overwrite an existing --video file")
    e.set_defaults(fn=cmd_eval)

    pl = sub.add_parser("plot", help="overlay the learning curves of runs in a PNG")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--out", default="curves.png", help="PNG to write (default curves.png)")
    pl.add_argument("--x", choices=["timesteps", "labels"], default="timesteps",
                    help="true return against timesteps or against labels used")
    pl.add_argument("--name", nargs="+",
                    help="a legend name per run; runs with the same name (seeds) are drawn "
                         "as their median with a min-max band")
    pl.add_argument("--calibration", action="store_true",
                    help="instead of curves: each run's reward-model reliability diagram on "
                         "its held-out labels (newest checkpoint)")
    pl.add_argument("--force", action="store_true", help="replace an existing --out file")
    pl.set_defaults(fn=cmd_plot)
