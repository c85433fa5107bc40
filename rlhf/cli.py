"""The ``rlhf`` command line.

    rlhf train CONFIG [--run-dir DIR] [--seed N] [--force] [--label] [key.path=value ...]
    rlhf tune CONFIG [--run-dir DIR] [--seed N] [--force] [--no-viewer] [key.path=value ...]
    rlhf tune --resume RUN_DIR [tune.comparisons=N ...]
    rlhf label RUN_DIR [--screenshot out.png] [--name NAME] [--speed X] [key.path=value ...]
    rlhf label postgresql://HOST/DB --run NAME [--annotator WHO] [--allow-import MODULE]
    rlhf annotators|export|import ...   (rlhf.cli_labels)
    rlhf status RUN_DIR [--json]                                        (rlhf.cli_runs)
    rlhf eval RUN_DIR [--episodes N] [--video OUT.gif|OUT.mp4 [--video-episodes N] [--force]]
    rlhf plot RUN_DIR... [--out curves.png] [--x timesteps|labels] [--name NAME ...]
                         [--calibration]
    rlhf check-env ENV_OR_CONFIG [--simulated] [--quick] [key.path=value ...]

User errors (bad config, unknown env, missing run) print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator

from rlhf.cli_labels import add_label_commands
from rlhf.cli_runs import add_run_commands
from rlhf.config import Config, ConfigError, load_config
from rlhf.io import SaveError
from rlhf.lock import RunLocked
from rlhf.render import RenderError
from rlhf.reward.model import RewardModelError
from rlhf.rundir import Interrupted, RunDir, RunDirError
from rlhf.store import StoreError
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

    add_run_commands(sub)  # status, eval, plot

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
