"""``rlhf check-env ENV``: is an environment ready for learning from preferences?

In a few seconds, on the env as the config makes it (``env.id``, ``env.kwargs``,
``env.imports``):

1. make      the env can be made;
2. spaces    observation and action spaces the reward model and SB3 can take;
3. step      a short random rollout: observations match the space and are finite, rewards
             are finite numbers, episodes are long enough for clips;
4. gymnasium gymnasium's own ``check_env`` (its render checks are step 5's job);
5. render    an ``rgb_array`` frame;
6. state     saving and restoring the env's state reproduces its next steps, in the same env
             and in a freshly made one;
7. replay    frames rendered from saved states match the frames of the rollout;

then it reports the viewer's rendering path, the reward network the spaces choose and, when
the config names one, runs the teacher's scoring function on a clip. Each problem is one
line saying what is wrong and how to fix it. Rendering problems block only when a person
labels (``teacher.kind: human``, assumed for a bare env id): a simulated teacher needs no
frames.

``preflight(cfg)`` runs the blocking checks quickly before ``rlhf train`` and raises
``EnvError`` with the first problem, so a broken env fails in one line instead of a
traceback minutes into a run.

``CHECKS`` and ``REPORTS`` below are the order; each ``Check`` names what it needs, and one
whose needs are not met when its turn comes is skipped:

>>> [c.name for c in CHECKS]
['make', 'spaces', 'step', 'gymnasium', 'render', 'state', 'replay']
>>> [need.what for need in CHECKS[-1].needs]
['frames checked', 'an env whose rgb_array frames work', 'a state that saves and restores']
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from rlhf.checkenv.basics import check_gymnasium, check_spaces, check_steps, make
from rlhf.checkenv.context import (
    FRAMES,
    GYM_CHECKER,
    RENDERING_ENV,
    RESTORABLE_STATE,
    ROLLOUT,
    SCORING_TEACHER,
    STATE_CHECKED,
    USABLE_SPACES,
    Check,
    Context,
    Stop,
    close,
)
from rlhf.checkenv.frames import FRAME_TOLERANCE, check_render, check_replay
from rlhf.checkenv.report import Finding, Level, Report
from rlhf.checkenv.state import check_state
from rlhf.checkenv.summary import check_score, report_network, report_viewer
from rlhf.config import Config, load_config
from rlhf.environment import EnvError, describe_exception

__all__ = ["CHECKS", "FRAME_TOLERANCE", "REPORTS", "Finding", "Level", "Report", "check",
           "config_for", "preflight"]

CHECKS: tuple[Check, ...] = (
    Check("make", make),
    Check("spaces", check_spaces),
    Check("step", check_steps),
    Check("gymnasium", check_gymnasium, needs=(GYM_CHECKER,), quiet=False),  # records its own
    Check("render", check_render, needs=(FRAMES,)),
    Check("state", check_state),
    Check("replay", check_replay, needs=(FRAMES, RENDERING_ENV, RESTORABLE_STATE)),
)
"""The checks on the env, in order; the first that fails so that the rest cannot run
(``Stop``) ends them, and the envs are closed."""

REPORTS: tuple[Check, ...] = (
    Check("viewer", report_viewer, needs=(FRAMES, STATE_CHECKED), quiet=False),
    Check("reward-net", report_network, needs=(USABLE_SPACES,), quiet=False),
    Check("score", check_score, needs=(SCORING_TEACHER, ROLLOUT), quiet=False),
)
"""What the checks found out, reported after them (whether or not they all ran)."""


def config_for(target: str, overrides: list[str] | None = None) -> tuple[Config, bool]:
    """The config to check: ``target`` is a YAML config file or an env id / entry point.

    Returns (config, from_file). For a bare env id the teacher is taken to be a person,
    since checking an env is mostly about whether a person can label it.
    """
    overrides = list(overrides or [])
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        return load_config(target, overrides), True
    cfg = load_config(None, ["teacher.kind=human", *overrides])
    cfg.env.id = target
    return cfg, False


def check(cfg: Config, *, person: bool | None = None, strict: bool = True,
          gym_checker: bool = True, frames: bool | None = None, steps: int = 100) -> Report:
    """Run the checks on ``cfg.env``.

    Args:
        person: whether a person labels (default: ``cfg.teacher.kind == "human"``).
        strict: config-specific mismatches (clip length vs episode length, SB3 policy vs
            observation space) are errors rather than warnings.
        gym_checker: also run gymnasium's ``check_env``.
        frames: check rendering and replayed frames (default: always for check-env).
        steps: random steps in the rollout check.
    """
    person = cfg.teacher.kind == "human" if person is None else person
    ctx = Context(cfg, person=person, strict=strict, gym_checker=gym_checker,
                  frames=True if frames is None else frames, steps=steps)
    t0 = time.perf_counter()
    _run(ctx)
    return Report(cfg.env.id, person, tuple(ctx.findings), time.perf_counter() - t0)


def preflight(cfg: Config) -> Report:
    """The blocking checks, quickly (no gymnasium checker; frames only for a person).

    Raises:
        EnvError: naming the first blocking problem and pointing to ``rlhf check-env``.
    """
    person = cfg.teacher.kind == "human"
    report = check(cfg, person=person, strict=True, gym_checker=False, frames=person,
                   steps=32)
    if report.errors:
        first, more = report.errors[0], len(report.errors) - 1
        if first.check == "make":  # a config error (unknown id, bad kwargs): as it is
            raise EnvError(first.message)
        extra = f" (and {more} more problem{'s' * (more != 1)})" if more else ""
        raise EnvError(f"{cfg.env.id}: {first.check}: {first.message}{extra}; "
                       f"`rlhf check-env {cfg.env.id}` shows the full report")
    return report


def _run(ctx: Context) -> None:
    try:
        for c in CHECKS:
            _run_one(c, ctx)
    except Stop:
        pass
    except Exception as e:  # an env method misbehaving somewhere a check did not expect
        ctx.add("error", ctx.ran[-1], f"{ctx.name} raised {describe_exception(e)}")
    finally:
        for env in (ctx.env, ctx.fresh):
            if env is not None:
                close(env)
    for c in REPORTS:
        _run_one(c, ctx)


def _run_one(c: Check, ctx: Context) -> None:
    if not c.due(ctx):
        return
    ctx.ran.append(c.name)
    with warnings.catch_warnings():
        if c.quiet:
            warnings.simplefilter("ignore")
        c.run(ctx)
