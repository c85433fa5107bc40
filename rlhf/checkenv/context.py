"""What the checks share: the env under test, what the checks so far found out about it, and
the plumbing to report a finding or stop.

A check is a function of a ``Context``; its ``Check`` names the ``Need``s it has (a rendering
env, a restorable state, ...). ``rlhf.checkenv`` runs the checks in order and skips one whose
needs are not met when its turn comes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from rlhf.checkenv.report import Finding, Level
from rlhf.checkenv.spaces import flat
from rlhf.config import Config, ConfigError
from rlhf.environment import EnvError, StateAdapter, describe_exception, make_env


class Stop(Exception):
    """A check failed so that the later ones cannot run."""


@dataclass
class Rollout:
    """What the step check saw, reused by the score check."""

    obs: list[np.ndarray]
    actions: list[np.ndarray]
    rewards: list[float]
    states: list[np.ndarray] | None
    episode_lengths: list[int]


@dataclass
class Context:
    """The options of one ``check`` call, its findings, and what the checks learnt so far."""

    cfg: Config
    person: bool
    strict: bool
    gym_checker: bool
    frames: bool
    steps: int
    findings: list[Finding] = field(default_factory=list)
    env: gym.Env | None = None
    fresh: gym.Env | None = None
    """A second env, made by the state check, to restore saved states into."""
    adapter: StateAdapter | None = None
    renders: bool = False
    """The env offers ``rgb_array`` frames (the make check), and they work (the render check)."""
    spaces_ok: bool = False
    restorable: bool = False
    rollout: Rollout | None = None
    ran: list[str] = field(default_factory=list)
    """The checks started so far; the last is the one running, for errors no check foresaw."""

    def add(self, level: Level, check: str, message: str) -> None:
        self.findings.append(Finding(level, check, message))

    def fail(self, check: str, message: str) -> Stop:
        self.add("error", check, message)
        return Stop()

    def call(self, check: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; an exception becomes an error line and stops the checks."""
        try:
            return fn(*args, **kwargs)
        except EnvError as e:
            raise self.fail(check, str(e)) from None
        except Exception as e:
            raise self.fail(check, f"{what} raised {describe_exception(e)}") from None

    @property
    def name(self) -> str:
        return type(self.env.unwrapped).__name__ if self.env is not None else self.cfg.env.id

    def make_env(self, render: bool) -> gym.Env:
        try:
            return make_env(self.cfg.env, render_mode="rgb_array" if render else None)
        except ConfigError as e:
            raise self.fail("make", str(e)) from None


@dataclass(frozen=True)
class Need:
    """Something a check needs, met or not by the time the check's turn comes."""

    what: str
    met: Callable[[Context], bool]


GYM_CHECKER = Need("gymnasium's check_env asked for", lambda c: c.gym_checker)
FRAMES = Need("frames checked", lambda c: c.frames)  # check-env: always; preflight: a person
RENDERING_ENV = Need("an env whose rgb_array frames work", lambda c: c.renders)
RESTORABLE_STATE = Need("a state that saves and restores", lambda c: c.restorable)
STATE_CHECKED = Need("the state check run", lambda c: "state" in c.ran)
USABLE_SPACES = Need("spaces the reward model takes", lambda c: c.spaces_ok)
SCORING_TEACHER = Need("a simulated teacher with teacher.score",
                       lambda c: c.cfg.teacher.score is not None
                       and c.cfg.teacher.kind != "human")
ROLLOUT = Need("the step check's random rollout",
               lambda c: c.rollout is not None and bool(c.rollout.obs))


@dataclass(frozen=True)
class Check:
    """One check: its name (the report's ``check`` column), its function and its needs.

    ``quiet`` silences warnings while it runs: gymnasium's passive checker repeats what the
    checks say, in colour.
    """

    name: str
    run: Callable[[Context], None]
    needs: tuple[Need, ...] = ()
    quiet: bool = True

    def due(self, ctx: Context) -> bool:
        return all(need.met(ctx) for need in self.needs)


# -- stepping an env -----------------------------------------------------------------------


@dataclass
class Steps:
    obs: list[np.ndarray]
    rewards: list[float]
    done: bool


def run_actions(env: gym.Env, actions: list[Any]) -> Steps:
    """Step ``env`` through ``actions`` until an episode ends; flat float observations."""
    out = Steps([], [], False)
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.obs.append(flat(env.observation_space, obs))
        out.rewards.append(float(reward))
        if terminated or truncated:
            out.done = True
            break
    return out


def close(env: gym.Env) -> None:
    u = env.unwrapped
    # Classic-control envs' close() calls pygame.quit(), which would also close a viewer
    # window open in this process; without a screen it closes nothing.
    if type(u).__module__.startswith("gymnasium.envs.classic_control"):
        u.screen = None
    with contextlib.suppress(Exception):  # closing a broken env must not hide the report
        env.close()
