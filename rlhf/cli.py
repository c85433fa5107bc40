"""The ``rlhf`` command line.

    rlhf train CONFIG [--run-dir DIR] [--seed N] [--force] [--label] [key.path=value ...]
    rlhf tune CONFIG [--run-dir DIR] [--seed N] [--force] [--no-viewer] [key.path=value ...]
    rlhf tune --resume RUN_DIR [tune.comparisons=N ...]
    rlhf label RUN_DIR [--screenshot out.png] [--name NAME] [--speed X] [key.path=value ...]
    rlhf label postgresql://HOST/DB --run NAME [--annotator WHO] [--allow-import MODULE]
    rlhf annotators|export|import ...   (rlhf.cli_labels)
    rlhf status RUN_DIR [--json]
    rlhf eval RUN_DIR [--episodes N] [--video OUT.gif|OUT.mp4 [--video-episodes N] [--force]]
    rlhf check-env ENV_OR_CONFIG [--simulated] [--quick] [key.path=value ...]
    rlhf plot RUN_DIR... [--out curves.png] [--x timesteps|labels] [--name NAME ...]
                         [--calibration]

User errors (bad config, unknown env, missing run) print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf.cli_labels import add_label_commands
from rlhf.config import Config, ConfigError, load_config
from rlhf.io import SaveError
from rlhf.lock import RunLocked
from rlhf.render import RenderError
from rlhf.reward.model import WEIGHTS, RewardModelError
from rlhf.rundir import OBS_RMS, POLICY, Interrupted, RunDir, RunDirError
from rlhf.store import Store, StoreError
from rlhf.video import VideoError
from rlhf.viewer import ViewerError

USER_ERRORS = (ConfigError, RunDirError, StoreError, RewardModelError, SaveError, RenderError,
               ViewerError, VideoError, RunLocked)


def cmd_train(args: argparse.Namespace) -> int:
    from rlhf.loop import run
    from rlhf.resume import resume_config

    if args.resume:
        cfg = resume_config(args.resume, _resume_overrides(args))
    else:
        cfg = load_config(args.config, _start_overrides(args, "rlhf train",
                                                        "configs/pendulum.yaml"))
    if cfg.tune is not None:
        raise ConfigError(f"{args.config or args.resume}: a tuning config (it has a tune "
                          "section): run it with rlhf tune "
                          + (f"--resume {args.resume}" if args.resume else str(args.config)))
    if args.label and cfg.teacher.kind != "human":
        raise ConfigError(f"--label opens the viewer for a person, but teacher.kind is "
                          f"{cfg.teacher.kind!r}; add teacher.kind=human")
    with _viewer(cfg, args.label):
        result = run(cfg, force=args.force, progress=not args.quiet,
                     resume=args.resume is not None)
    print(f"rlhf: done: {result.timesteps} timesteps, {result.labels} labels, "
          f"final true return {result.final_return:.2f}; run directory {result.run_dir}")
    return 0


@contextlib.contextmanager
def _viewer(cfg: Config, open_it: bool) -> Iterator[None]:
    """With ``open_it``: the viewer on ``cfg``'s run in a child process while the block runs
    (it waits for the run directory to appear), closed cleanly after it."""
    if not open_it:
        yield
        return
    if cfg.run_dir is None:  # fix it now, so the viewer knows where to look
        cfg.run_dir = str(RunDir.default_path(cfg))
    viewer = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "label", cfg.run_dir,
                               "--wait"])
    try:
        yield
    finally:
        if viewer.poll() is None:
            viewer.terminate()  # the viewer quits cleanly on SIGTERM; answers are saved
            try:
                viewer.wait(10)
            except subprocess.TimeoutExpired:
                viewer.kill()


def _resume_overrides(args: argparse.Namespace) -> list[str]:
    """``rlhf train|tune --resume DIR [key=value ...]``: the positional CONFIG slot may hold
    the first override; the config itself comes from the run directory."""
    overrides = list(args.overrides)
    if args.config is not None:
        overrides.insert(0, args.config)
    if args.seed is not None or args.run_dir is not None or args.force:
        raise ConfigError("--resume continues a run as it was configured; drop --seed, "
                          "--run-dir and --force")
    return overrides


def _start_overrides(args: argparse.Namespace, command: str, example: str) -> list[str]:
    if args.config is None:
        raise ConfigError(f"{command} needs a CONFIG file (e.g. {example}), or --resume RUN_DIR")
    return [*args.overrides, *([f"seed={args.seed}"] if args.seed is not None else []),
            *([f"run_dir={args.run_dir}"] if args.run_dir is not None else [])]


def cmd_tune(args: argparse.Namespace) -> int:
    from rlhf.tune.result import format_params
    from rlhf.tune.run import resume_tune_config, run_tune

    if args.resume:
        cfg = resume_tune_config(args.resume, _resume_overrides(args))
    else:
        cfg = load_config(args.config, _start_overrides(args, "rlhf tune",
                                                        "configs/tune_reach2d.yaml"))
        if cfg.tune is None:
            raise ConfigError(f"{args.config}: no tune section (tune.params, tune.behaviour): "
                              f"an RL config; train an agent with rlhf train {args.config}")
    with _viewer(cfg, cfg.teacher.kind == "human" and not args.no_viewer):
        result = run_tune(cfg, force=args.force, resume=args.resume is not None,
                          log=(lambda _: None) if args.quiet else print)
    best = format_params(result.params)
    print(f"rlhf: done: {result.comparisons} comparisons; best {best} (estimated utility "
          f"{result.utility_mean:.2f} ± {result.utility_std:.2f}); run directory "
          f"{result.run_dir}")
    return 0


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


def cmd_check_env(args: argparse.Namespace) -> int:
    from rlhf.checkenv import check, config_for
    from rlhf.display import headless_sdl

    # Classic-control envs initialise pygame's display even for rgb_array frames; with no
    # display SDL complains on stderr. check-env never opens a window.
    headless_sdl()
    overrides = list(args.overrides) + (["teacher.kind=oracle"] if args.simulated else [])
    cfg, from_file = config_for(args.env, overrides)
    report = check(cfg, strict=from_file, gym_checker=not args.quick)
    print(report.format())
    return 0 if report.ok else 2


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlhf", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an agent from preferences")
    t.add_argument("config", nargs="?", help="YAML config, e.g. configs/pendulum.yaml")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides")
    t.add_argument("--run-dir", help="where the run lives (default runs/<name>-s<seed>-<time>)")
    t.add_argument("--seed", type=int)
    t.add_argument("--force", action="store_true", help="start over in an existing run dir")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a stopped run from its newest checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--label", action="store_true",
                   help="also open the viewer (a child process) to label this run's pairs")
    t.set_defaults(fn=cmd_train)

    tu = sub.add_parser("tune", help="tune a few parameters from pairwise choices "
                        "(preferential Bayesian optimisation)")
    tu.add_argument("config", nargs="?", help="YAML tuning config, e.g. "
                    "configs/tune_reach2d.yaml")
    tu.add_argument("overrides", nargs="*", help="key.path=value overrides")
    tu.add_argument("--run-dir", help="where the run lives (default runs/<name>-s<seed>-<time>)")
    tu.add_argument("--seed", type=int)
    tu.add_argument("--force", action="store_true", help="start over in an existing run dir")
    tu.add_argument("--resume", metavar="RUN_DIR",
                    help="continue a stopped tuning run; no answer is lost")
    tu.add_argument("--quiet", action="store_true", help="print only the result")
    tu.add_argument("--no-viewer", action="store_true",
                    help="with teacher.kind=human: do not open the viewer (label from another "
                         "terminal or machine: rlhf label RUN_DIR)")
    tu.set_defaults(fn=cmd_tune)

    add_label_commands(sub)  # label, annotators, export, import

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

    c = sub.add_parser("check-env", help="check that an environment is ready for rlhf train",
                       description="Check an environment for learning from preferences: "
                       "gymnasium's checker, a random rollout, an rgb_array frame, state "
                       "save/restore and replayed frames, the viewer's rendering path and the "
                       "reward network. Exits 2 on a blocking problem.")
    c.add_argument("env", help="a gymnasium id, 'module.path:ClassName', 'module.path:Id-v0', "
                   "or a YAML config whose env section to check")
    c.add_argument("overrides", nargs="*", help="key.path=value, e.g. env.kwargs.size=32")
    c.add_argument("--simulated", action="store_true",
                   help="a simulated teacher labels: rendering problems do not block")
    c.add_argument("--quick", action="store_true", help="skip gymnasium's own check_env")
    c.set_defaults(fn=cmd_check_env)

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
    return p


def _thread_errors(args: threading.ExceptHookArgs) -> None:
    """A background writer (TensorBoard's, the viewer's) hitting a full disk says so in one
    line; anything else keeps Python's full report."""
    if isinstance(args.exc_value, OSError):
        print(f"rlhf: error: a background writer failed: {args.exc_value}", file=sys.stderr)
    else:
        sys.__excepthook__(args.exc_type, args.exc_value, args.exc_traceback)


def main(argv: list[str] | None = None) -> int:
    threading.excepthook = _thread_errors
    parser = build_parser()
    # key=value overrides may come after options too (`rlhf train C --quiet a.b=1`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or not all("=" in x and not x.startswith("-")
                                                     for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.fn(args)
    except USER_ERRORS as e:
        print(f"rlhf: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"rlhf: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("rlhf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
