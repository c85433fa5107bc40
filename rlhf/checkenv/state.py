"""Check 6: saving and restoring the env's state reproduces its next steps, in the same env
and in a freshly made one (what replaying clips for the viewer relies on)."""

from __future__ import annotations

import numpy as np

from rlhf.checkenv.context import Context, Steps, run_actions
from rlhf.checkenv.spaces import sample
from rlhf.environment import state_adapter


def check_state(ctx: Context) -> None:
    env, adapter = ctx.env, ctx.adapter
    assert env is not None
    if adapter is None:
        ctx.add("warn" if ctx.person else "info", "state",
                f"{ctx.name} cannot save and restore its state (not a MuJoCo or "
                "classic-control env, no get_state()/set_state()): clips cannot be "
                "replayed, so frames must be recorded during rollouts; add "
                "get_state() -> np.ndarray and set_state(state) to "
                f"{ctx.name} (docs/custom_envs.md)")
        return
    fix = ("get_state() must return everything step() depends on and set_state() must "
           "write all of it back" if adapter.name == "custom" else
           f"the env keeps state beyond what the {adapter.name} adapter saves; give "
           f"{ctx.name} get_state()/set_state() methods that capture it")
    ctx.call("state", "reset(seed=2)", env.reset, seed=2)
    rng = np.random.default_rng(0)
    actions = [sample(env.action_space, rng) for _ in range(30)]
    if run_actions(env, actions[:5]).done:
        raise ctx.fail("state", "the episode ended within 5 random steps of reset, too "
                       "soon to check save/restore")
    saved = ctx.call("state", "get_state()", adapter.get, env).copy()
    # NaN is the classic-control adapter's marker for "no last action"; nothing else.
    allowed = np.isnan(saved) if adapter.name == "classic-control" else False
    if saved.size == 0 or not np.all(np.isfinite(saved) | allowed):
        raise ctx.fail("state", f"get_state() returned {saved!r}: return a non-empty "
                       "vector of finite numbers")
    expected = run_actions(env, actions[5:15])
    run_actions(env, actions[15:30])  # wander off
    ctx.call("state", "set_state()", adapter.set, env, saved)
    compare_state(ctx, adapter.get(env), saved, "in the same env", fix)
    compare_steps(ctx, expected, run_actions(env, actions[5:5 + len(expected.obs)]),
                  "after set_state(get_state()) the env does not continue as before",
                  fix)
    ctx.fresh = ctx.make_env(render=ctx.frames and ctx.renders)
    ctx.call("state", "reset(seed=12345) of a fresh env", ctx.fresh.reset, seed=12345)
    fresh_adapter = state_adapter(ctx.fresh)
    assert fresh_adapter is not None
    ctx.call("state", "set_state() on a fresh env", fresh_adapter.set, ctx.fresh, saved)
    compare_state(ctx, fresh_adapter.get(ctx.fresh), saved, "in a fresh env", fix)
    compare_steps(ctx, expected, run_actions(ctx.fresh, actions[5:5 + len(expected.obs)]),
                  "restoring a saved state into a freshly reset env does not "
                  "reproduce the steps that followed it",
                  f"{fix} (including what reset() draws: goals, layouts, "
                  "randomised parameters)")
    ctx.restorable = True
    ctx.add("ok", "state", f"saved and restored through the {adapter.name} adapter "
            f"({saved.size} values); restoring reproduces the next "
            f"{len(expected.obs)} steps, in this env and in a fresh one")


def compare_state(ctx: Context, got: np.ndarray, saved: np.ndarray, where: str, fix: str) -> None:
    if got.shape != saved.shape or not np.allclose(got, saved, rtol=1e-9, atol=1e-12,
                                                   equal_nan=True):
        raise ctx.fail("state", f"get_state() after set_state(s) returns a different "
                       f"vector than s ({where}): {fix}")


def compare_steps(ctx: Context, expected: Steps, got: Steps, what: str, fix: str) -> None:
    n = min(len(expected.obs), len(got.obs))
    for t in range(n):
        a, b = expected.obs[t], got.obs[t]
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6):
            diff = np.abs(a - b).max() if a.shape == b.shape else np.inf
            raise ctx.fail("state", f"{what}: the observation after step {t + 1} differs "
                           f"(max |diff| {diff:.3g}); {fix}")
        if not np.isclose(expected.rewards[t], got.rewards[t], rtol=1e-5, atol=1e-6):
            raise ctx.fail("state", f"{what}: the reward of step {t + 1} differs "
                           f"({expected.rewards[t]:.6g} vs {got.rewards[t]:.6g}); {fix}")

