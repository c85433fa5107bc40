"""After the checks: the viewer's rendering path, the reward network the spaces choose and,
when the config names one, the teacher's scoring function run on a clip of the rollout."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from rlhf.checkenv.context import Context
from rlhf.clips import Clip
from rlhf.config import ConfigError
from rlhf.environment import describe_exception


def report_viewer(ctx: Context) -> None:
    if not ctx.renders:
        ctx.add("info", "viewer", "none: without rgb_array frames only a simulated "
                "teacher (teacher.kind: oracle, teacher.score) can label this env")
    elif ctx.restorable:
        ctx.add("info", "viewer", "state replay: clips keep the env's state per step; "
                "the viewer renders frames on demand")
    elif ctx.adapter is None:
        env = ctx.cfg.env
        ctx.add("info", "viewer", "recorded frames: the state cannot be restored, so "
                "frames are recorded at collection for candidate clips (env.frame_fraction "
                f"{env.frame_fraction:g} of clips, at most {env.frame_size} px per side)")
    else:
        ctx.add("info", "viewer", "state replay, but restoring does not work (see "
                "'state' above): clips would show the wrong behaviour")


def report_network(ctx: Context) -> None:
    from rlhf.reward.model import FeatureSpec, make_network

    assert ctx.env is not None
    r = ctx.cfg.reward
    spec = FeatureSpec.from_spaces(ctx.env.observation_space, ctx.env.action_space,
                                   r.use_action, r.use_next_obs)
    net = make_network(spec, r.ensemble, r.hidden)
    act = (f"{spec.action_dim} action" + (" (one-hot)" if spec.action_kind != "box" else "")
           if r.use_action else "no action")
    mflop = net.flops_per_input() / 1e6
    if spec.obs_is_image:
        c, h, w = net.chw
        layout = "CHW" if spec.channels_first else "HWC -> CHW"
        conv = ", ".join(f"{o}x{k}/{s}" for o, k, s in net.conv_layers)
        ctx.add("info", "reward-net", f"CNN (EnsembleCNN, {r.ensemble} members): "
                f"{c}x{h}x{w} images ({layout}, /255) through conv [{conv}], then "
                f"{net.conv_features} conv features + {act} inputs -> {r.hidden} -> 1; "
                f"{mflop:.2f} MFLOP per step per member")
    else:
        obs = f"{spec.obs_dim} observation"
        if isinstance(ctx.env.observation_space, gym.spaces.Dict):
            keys = ", ".join(f"{k}({gym.spaces.flatdim(s)})"
                             for k, s in ctx.env.observation_space.spaces.items())
            obs += f" (Dict flattened in key order: {keys})"
        nxt = f" + {spec.obs_dim} next-observation" if r.use_next_obs else ""
        ctx.add("info", "reward-net", f"MLP (EnsembleMLP, {r.ensemble} members): "
                f"{spec.in_dim} inputs = {obs}{nxt} + {act} -> {r.hidden} -> 1")


def check_score(ctx: Context) -> None:
    from rlhf.clips import batch_of_one, flatten_obs
    from rlhf.teachers import load_score_fn

    spec = ctx.cfg.teacher.score
    try:
        fn = load_score_fn(spec)
    except ConfigError as e:
        ctx.add("error", "score", str(e))
        return
    assert ctx.env is not None and ctx.rollout is not None
    ro, space = ctx.rollout, ctx.env.observation_space
    t = min(ctx.cfg.loop.clip_length, len(ro.actions) - 1)
    if t < 1:
        return
    obs = np.concatenate([flatten_obs(space, batch_of_one(o)) for o in ro.obs[: t + 1]])
    clip = Clip(obs=obs[:t], actions=np.stack(ro.actions[:t]),
                rewards=np.asarray(ro.rewards[:t]), dones=np.zeros(t, bool),
                last_obs=obs[t], states=None if ro.states is None
                else np.stack(ro.states[:t]))
    try:
        scores = np.asarray(fn(clip), dtype=np.float64)
    except Exception as e:
        ctx.add("error", "score", f"teacher.score {spec} raised {describe_exception(e)} "
                f"on a {t}-step clip")
        return
    if scores.shape != (t,):
        ctx.add("error", "score", f"teacher.score {spec} returned shape {scores.shape} "
                f"for a {t}-step clip: return one score per step, shape ({t},)")
    elif not np.all(np.isfinite(scores)):
        ctx.add("error", "score", f"teacher.score {spec} returned non-finite scores: "
                "return finite numbers")
    else:
        ctx.add("ok", "score", f"teacher.score {spec} scores a {t}-step clip "
                f"(return {scores.sum():.3g})")

