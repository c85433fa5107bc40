"""Checks 1 to 4: the env can be made, its spaces suit the reward model and SB3, a short
random rollout behaves, and gymnasium's own ``check_env`` passes."""

from __future__ import annotations

import re
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from rlhf.checkenv.context import Context, Rollout, close
from rlhf.checkenv.spaces import (
    action_space_problems,
    obs_mismatch,
    obs_space_problems,
    sb3_policy,
    space_str,
)
from rlhf.environment import describe_exception, nonfinite, state_adapter

ANSI = re.compile(r"\x1b\[[0-9;]*m")
GYM_BENIGN = ("observation space minimum value is -infinity",
              "observation space maximum value is infinity")
"""gymnasium checker warnings that do not matter here (MuJoCo observations are unbounded)."""


# -- 1. make -----------------------------------------------------------------------------

def make(ctx: Context) -> None:
    env = ctx.make_env(render=False)
    modes = list(env.metadata.get("render_modes") or [])
    ctx.renders = "rgb_array" in modes
    if ctx.renders and ctx.frames:
        close(env)
        env = ctx.make_env(render=True)
    ctx.env = env
    u = env.unwrapped
    horizon = env.spec.max_episode_steps if env.spec is not None else None
    limit = (f"episodes of at most {horizon} steps" if horizon
             else "no registered time limit (episodes end when the env says so)")
    ctx.add("ok", "make", f"{type(u).__name__} from {type(u).__module__}, {limit}")


# -- 2. spaces ---------------------------------------------------------------------------

def check_spaces(ctx: Context) -> None:
    assert ctx.env is not None
    obs_space, act_space = ctx.env.observation_space, ctx.env.action_space
    problems = obs_space_problems(obs_space) + action_space_problems(act_space)
    for level, message in problems:
        ctx.add(level, "spaces", message)
    ctx.spaces_ok = not any(level == "error" for level, _ in problems)
    policy = sb3_policy(obs_space)
    if isinstance(obs_space, gym.spaces.Dict) and ctx.cfg.agent.policy != policy:
        ctx.add("error" if ctx.strict else "warn", "spaces",
                f"agent.policy {ctx.cfg.agent.policy} cannot read Dict observations: "
                f"set agent.policy: {policy}")
    if ctx.spaces_ok:
        ctx.add("ok", "spaces", f"observation {space_str(obs_space)} (SB3 policy: "
                f"{policy}); action {space_str(act_space)}")


# -- 3. step -----------------------------------------------------------------------------

def check_steps(ctx: Context) -> None:
    env = ctx.env
    assert env is not None
    space = env.observation_space
    env.action_space.seed(0)
    obs, _ = ctx.call("step", "reset(seed=0)", env.reset, seed=0)
    obs_problem(ctx, space, obs, "reset()")
    ctx.adapter = state_adapter(env)
    rollout = Rollout([], [], [], [] if ctx.adapter is not None else None, [])
    reported: set[str] = set()
    length, t0 = 0, time.perf_counter()
    for i in range(ctx.steps):
        action = env.action_space.sample()
        if rollout.states is not None and len(rollout.states) == i:
            try:
                rollout.states.append(ctx.adapter.get(env))  # type: ignore[union-attr]
            except Exception:  # the state check says what is wrong with get_state
                rollout.states = None
        rollout.obs.append(obs)
        obs, reward, terminated, truncated, _ = ctx.call(
            "step", f"step() at step {i + 1}", env.step, action)
        rollout.actions.append(np.asarray(action))
        kind = obs_problem(ctx, space, obs, f"step() at step {i + 1}", reported)
        if kind is not None:
            reported.add(kind)
        try:
            r = float(reward)
        except (TypeError, ValueError):
            raise ctx.fail("step", f"step() returned reward {reward!r}, not a number: "
                           "return a float") from None
        if not np.isfinite(r):
            raise ctx.fail("step", f"step() at step {i + 1} returned reward {r}: fix the "
                           "env so rewards are always finite numbers")
        rollout.rewards.append(r)
        length += 1
        if terminated or truncated:
            rollout.episode_lengths.append(length)
            length = 0
            obs, _ = ctx.call("step", "reset()", env.reset)
            obs_problem(ctx, space, obs, "reset()", reported)
    rate = ctx.steps / max(time.perf_counter() - t0, 1e-9)
    ctx.rollout = rollout
    if not any(f.level == "error" and f.check == "step" for f in ctx.findings):
        ctx.add("ok", "step", f"{ctx.steps} random steps, {rate:,.0f} steps/s; "
                "observations match the space, observations and rewards are finite")
    check_episode_length(ctx, rollout)


def obs_problem(ctx: Context, space: gym.Space, obs: Any, where: str,
                reported: set[str] | None = None) -> str | None:
    """Report what is wrong with ``obs``; blocking problems stop the checks."""
    if (bad := nonfinite(obs)) is not None:
        raise ctx.fail("step", f"{where} returned a non-finite observation ({bad}): fix "
                       "the env so observations are always finite numbers")
    problem = obs_mismatch(space, obs)
    if problem is None:
        return None
    level, kind, message = problem
    if level == "error":
        raise ctx.fail("step", f"{where} {message}")
    if reported is None or kind not in reported:
        ctx.add(level, "step", f"{where} {message}")
    return kind


def check_episode_length(ctx: Context, rollout: Rollout) -> None:
    assert ctx.env is not None
    clip = ctx.cfg.loop.clip_length
    spec = ctx.env.spec
    horizon = spec.max_episode_steps if spec is not None else None
    if horizon is not None and horizon < clip:
        ctx.add("error" if ctx.strict else "warn", "step",
                f"episodes end after {horizon} steps, shorter than loop.clip_length "
                f"{clip}: clips never cross an episode's end, so none would be "
                f"collected; set loop.clip_length <= {horizon} (or raise "
                "env.max_episode_steps)")
    elif horizon is None and not rollout.episode_lengths:
        ctx.add("warn", "step", f"no time limit, and no episode ended within {ctx.steps} "
                "random steps: if episodes can run forever, set env.max_episode_steps "
                "(evaluation waits for episodes to end)")
    elif rollout.episode_lengths and max(rollout.episode_lengths) < clip:
        ctx.add("warn", "step", f"random-policy episodes lasted at most "
                f"{max(rollout.episode_lengths)} steps, shorter than loop.clip_length "
                f"{clip}: early clips will be few; consider a shorter loop.clip_length")


# -- 4. gymnasium's checker --------------------------------------------------------------

def check_gymnasium(ctx: Context) -> None:
    from gymnasium.utils.env_checker import check_env

    if any(f.level == "error" for f in ctx.findings):
        ctx.add("info", "gymnasium", "check_env skipped until the problems above are fixed")
        return
    assert ctx.env is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_env(ctx.env.unwrapped, skip_render_check=True)
            failed = False
        except Exception as e:
            ctx.add("error", "gymnasium", f"check_env failed: {describe_exception(e)}")
            failed = True
    messages = []
    for w in caught:
        text = ANSI.sub("", str(w.message)).removeprefix("WARN: ").strip()
        if issubclass(w.category, DeprecationWarning) or any(b in text for b in GYM_BENIGN):
            continue
        if text not in messages:
            messages.append(text)
    for text in messages:
        ctx.add("warn", "gymnasium", text.splitlines()[0])
    if not failed and not messages:
        ctx.add("ok", "gymnasium", "gymnasium's check_env passed")

