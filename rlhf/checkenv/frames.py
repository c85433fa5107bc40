"""Checks 5 and 7: the env renders ``rgb_array`` frames, and frames rendered from saved
states match the frames of the rollout (what the viewer's state replay relies on)."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from rlhf.checkenv.context import Context, run_actions
from rlhf.checkenv.report import Level
from rlhf.checkenv.spaces import sample
from rlhf.environment import MujocoState, describe_exception

FRAME_TOLERANCE = 1e-3
"""Share of pixels that may differ by more than 8 levels for two frames to count as equal
(GL rasterisers may differ in the last bit at anti-aliased edges)."""


# -- 5. render ---------------------------------------------------------------------------

def check_render(ctx: Context) -> None:
    env = ctx.env
    assert env is not None
    level: Level = "error" if ctx.person else "warn"
    why = ("a person needs frames to compare clips" if ctx.person
           else "only a simulated teacher can label it")
    if not ctx.renders:
        modes = list(env.metadata.get("render_modes") or [])
        ctx.add(level, "render", f"{ctx.name} does not offer render_mode 'rgb_array' "
                f"(metadata['render_modes'] = {modes}): add it and return an (H, W, 3) "
                f"uint8 array from render(); {why}")
        return
    ctx.call("render", "reset(seed=1)", env.reset, seed=1)
    try:
        frame = render_frame(ctx, env)
        t0 = time.perf_counter()
        frame = render_frame(ctx, env)
        ms = (time.perf_counter() - t0) * 1000
    except Exception as e:
        ctx.renders = False
        ctx.add(level, "render", f"render() raised {describe_exception(e)}; {why}")
        return
    problem = frame_problem(frame)
    if problem is not None:
        ctx.renders = False
        ctx.add(level, "render", f"render() in rgb_array mode returned {problem}: return "
                f"an (H, W, 3) uint8 array; {why}")
        return
    h, w, _ = frame.shape
    ctx.add("ok", "render", f"rgb_array frames {w}x{h}, {ms:.1f} ms each")


def render_frame(ctx: Context, env: gym.Env) -> np.ndarray:
    if isinstance(ctx.adapter, MujocoState):
        # After mj_step the body poses lag qpos by one substep; the viewer's replay
        # renders after mj_forward, so compare against that.
        import mujoco

        mujoco.mj_forward(env.unwrapped.model, env.unwrapped.data)
    return env.render()


# -- 7. replayed frames ------------------------------------------------------------------

def check_replay(ctx: Context) -> None:
    env, adapter, fresh = ctx.env, ctx.adapter, ctx.fresh
    assert env is not None and adapter is not None and fresh is not None
    level: Level = "error" if ctx.person else "warn"
    ctx.call("replay", "reset(seed=3)", env.reset, seed=3)
    rng = np.random.default_rng(1)
    states, frames = [], []
    for t in range(24):
        if t % 4 == 0:  # 6 frames: MuJoCo frames cost tens of ms on a CPU
            states.append(adapter.get(env))
            frames.append(np.asarray(render_frame(ctx, env)))
        if run_actions(env, [sample(env.action_space, rng)]).done:
            break
    run_actions(env, [sample(env.action_space, rng) for _ in range(10)])
    worst: dict[str, tuple[int, float]] = {}
    for where, target in (("this env", env), ("a fresh env", fresh)):
        bad, worst_share = 0, 0.0
        for state, frame in zip(states, frames, strict=True):
            ctx.call("replay", "set_state()", adapter.set, target, state)
            replayed = np.asarray(ctx.call("replay", "render()", target.render))
            share = frame_difference(frame, replayed)
            if share > FRAME_TOLERANCE:
                bad += 1
                worst_share = max(worst_share, share)
        worst[where] = (bad, worst_share)
    n = len(frames)
    if any(bad for bad, _ in worst.values()):
        detail = "; ".join(f"{bad}/{n} frames in {where} (up to {share:.1%} of pixels)"
                           for where, (bad, share) in worst.items() if bad)
        fix = ("MuJoCo's free camera keeps the look-at point of earlier frames: render "
               "from a tracking or fixed camera (for the stock locomotion envs, env.kwargs: "
               "{camera_name: track})" if isinstance(adapter, MujocoState) else
               "render() draws something the saved state does not hold (a trail, a "
               "camera that follows history, state kept by the renderer): draw each frame "
               "from the state alone")
        ctx.add(level, "replay", f"frames rendered from saved states differ from the "
                f"rollout's frames: {detail}; {fix}")
    else:
        ctx.add("ok", "replay", f"frames rendered from {n} saved states match the "
                "rollout's, in this env and in a fresh one")


def frame_problem(frame: Any) -> str | None:
    if frame is None:
        return "None"
    if not isinstance(frame, np.ndarray):
        return f"a {type(frame).__name__}"
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8 or frame.size == 0:
        return f"an array of shape {frame.shape} and dtype {frame.dtype}"
    return None


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels differing by more than 8 levels in some channel (1.0: other shape)."""
    if a.shape != b.shape:
        return 1.0
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)
    return float((diff > 8).mean())
