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
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rlhf.clips import Clip
from rlhf.config import Config, ConfigError, load_config
from rlhf.environment import (
    EnvError,
    MujocoState,
    StateAdapter,
    describe_exception,
    make_env,
    nonfinite,
    state_adapter,
)

Level = Literal["ok", "info", "warn", "error"]


@dataclass(frozen=True)
class Finding:
    """One line of the report; ``error`` blocks training (or labelling by a person)."""

    level: Level
    check: str
    message: str


@dataclass(frozen=True)
class Report:
    """Everything ``check`` found about one env, in the order the checks ran."""

    env_id: str
    person: bool
    """Whether a person labels (frames are required)."""
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warn"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        labels = {"ok": "ok", "info": "info", "warn": "WARN", "error": "ERROR"}
        who = "a person labels: frames needed" if self.person else "a simulated teacher labels"
        lines = [f"rlhf check-env: {self.env_id} ({who})"]
        lines += [f"  {labels[f.level]:<5} {f.check:<10} {f.message}" for f in self.findings]
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = (f"{n_err} blocking problem{'s' * (n_err != 1)}" if n_err
                   else "ready for rlhf train")
        lines.append(f"rlhf check-env: {verdict}, {n_warn} warning{'s' * (n_warn != 1)} "
                     f"({self.seconds:.1f} s)")
        return "\n".join(lines)


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
    checker = _Checker(cfg, person=person, strict=strict, gym_checker=gym_checker,
                       frames=True if frames is None else frames, steps=steps)
    t0 = time.perf_counter()
    checker.run()
    return Report(cfg.env.id, person, tuple(checker.findings), time.perf_counter() - t0)


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


# -- the checks ------------------------------------------------------------------------------


class _Stop(Exception):
    """A check failed so that the later ones cannot run."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GYM_BENIGN = ("observation space minimum value is -infinity",
               "observation space maximum value is infinity")
"""gymnasium checker warnings that do not matter here (MuJoCo observations are unbounded)."""

FRAME_TOLERANCE = 1e-3
"""Share of pixels that may differ by more than 8 levels for two frames to count as equal
(GL rasterisers may differ in the last bit at anti-aliased edges)."""


@dataclass
class _Rollout:
    """What the step check saw, reused by the score check."""

    obs: list[np.ndarray]
    actions: list[np.ndarray]
    rewards: list[float]
    states: list[np.ndarray] | None
    episode_lengths: list[int]


class _Checker:
    def __init__(self, cfg: Config, person: bool, strict: bool, gym_checker: bool,
                 frames: bool, steps: int):
        self.cfg, self.person, self.strict = cfg, person, strict
        self.gym_checker, self.frames, self.steps = gym_checker, frames, steps
        self.findings: list[Finding] = []
        self.env: gym.Env | None = None
        self.fresh: gym.Env | None = None
        self.adapter: StateAdapter | None = None
        self.renders = False
        self.spaces_ok = False
        self.restorable = False
        self.state_checked = False
        self.rollout: _Rollout | None = None
        self.current = "make"
        """The check running now, for errors no check anticipated."""

    # -- plumbing ----------------------------------------------------------------------------

    def add(self, level: Level, check: str, message: str) -> None:
        self.findings.append(Finding(level, check, message))

    def fail(self, check: str, message: str) -> _Stop:
        self.add("error", check, message)
        return _Stop()

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

    def run(self) -> None:
        try:
            self._run_checks()
        except _Stop:
            pass
        except Exception as e:  # an env method misbehaving somewhere a check did not expect
            self.add("error", self.current, f"{self.name} raised {describe_exception(e)}")
        finally:
            for env in (self.env, self.fresh):
                if env is not None:
                    _close(env)
        self.report_viewer()
        self.report_network()
        self.check_score()

    def _run_checks(self) -> None:
        with warnings.catch_warnings():
            # gymnasium's passive checker repeats what the checks below say, in colour.
            warnings.simplefilter("ignore")
            self.make()
            self.check_spaces()
            self.check_steps()
        if self.gym_checker:
            self.check_gymnasium()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.frames:
                self.check_render()
            self.check_state()
            if self.frames and self.renders and self.restorable:
                self.check_replay()

    def make_env(self, render: bool) -> gym.Env:
        try:
            return make_env(self.cfg.env, render_mode="rgb_array" if render else None)
        except ConfigError as e:
            raise self.fail("make", str(e)) from None

    # -- 1. make -----------------------------------------------------------------------------

    def make(self) -> None:
        self.current = "make"
        env = self.make_env(render=False)
        modes = list(env.metadata.get("render_modes") or [])
        self.renders = "rgb_array" in modes
        if self.renders and self.frames:
            _close(env)
            env = self.make_env(render=True)
        self.env = env
        u = env.unwrapped
        horizon = env.spec.max_episode_steps if env.spec is not None else None
        limit = (f"episodes of at most {horizon} steps" if horizon
                 else "no registered time limit (episodes end when the env says so)")
        self.add("ok", "make", f"{type(u).__name__} from {type(u).__module__}, {limit}")

    # -- 2. spaces ---------------------------------------------------------------------------

    def check_spaces(self) -> None:
        self.current = "spaces"
        assert self.env is not None
        obs_space, act_space = self.env.observation_space, self.env.action_space
        problems = _obs_space_problems(obs_space) + _action_space_problems(act_space)
        for level, message in problems:
            self.add(level, "spaces", message)
        self.spaces_ok = not any(level == "error" for level, _ in problems)
        policy = _sb3_policy(obs_space)
        if isinstance(obs_space, gym.spaces.Dict) and self.cfg.agent.policy != policy:
            self.add("error" if self.strict else "warn", "spaces",
                     f"agent.policy {self.cfg.agent.policy} cannot read Dict observations: "
                     f"set agent.policy: {policy}")
        if self.spaces_ok:
            self.add("ok", "spaces", f"observation {_space_str(obs_space)} (SB3 policy: "
                     f"{policy}); action {_space_str(act_space)}")

    # -- 3. step -----------------------------------------------------------------------------

    def check_steps(self) -> None:
        self.current = "step"
        env = self.env
        assert env is not None
        space = env.observation_space
        env.action_space.seed(0)
        obs, _ = self.call("step", "reset(seed=0)", env.reset, seed=0)
        self.obs_problem(space, obs, "reset()")
        self.adapter = state_adapter(env)
        rollout = _Rollout([], [], [], [] if self.adapter is not None else None, [])
        reported: set[str] = set()
        length, t0 = 0, time.perf_counter()
        for i in range(self.steps):
            action = env.action_space.sample()
            if rollout.states is not None and len(rollout.states) == i:
                try:
                    rollout.states.append(self.adapter.get(env))  # type: ignore[union-attr]
                except Exception:  # the state check says what is wrong with get_state
                    rollout.states = None
            rollout.obs.append(obs)
            obs, reward, terminated, truncated, _ = self.call(
                "step", f"step() at step {i + 1}", env.step, action)
            rollout.actions.append(np.asarray(action))
            kind = self.obs_problem(space, obs, f"step() at step {i + 1}", reported)
            if kind is not None:
                reported.add(kind)
            try:
                r = float(reward)
            except (TypeError, ValueError):
                raise self.fail("step", f"step() returned reward {reward!r}, not a number: "
                                "return a float") from None
            if not np.isfinite(r):
                raise self.fail("step", f"step() at step {i + 1} returned reward {r}: fix the "
                                "env so rewards are always finite numbers")
            rollout.rewards.append(r)
            length += 1
            if terminated or truncated:
                rollout.episode_lengths.append(length)
                length = 0
                obs, _ = self.call("step", "reset()", env.reset)
                self.obs_problem(space, obs, "reset()", reported)
        rate = self.steps / max(time.perf_counter() - t0, 1e-9)
        self.rollout = rollout
        if not any(f.level == "error" and f.check == "step" for f in self.findings):
            self.add("ok", "step", f"{self.steps} random steps, {rate:,.0f} steps/s; "
                     "observations match the space, observations and rewards are finite")
        self.check_episode_length(rollout)

    def obs_problem(self, space: gym.Space, obs: Any, where: str,
                    reported: set[str] | None = None) -> str | None:
        """Report what is wrong with ``obs``; blocking problems stop the checks."""
        if (bad := nonfinite(obs)) is not None:
            raise self.fail("step", f"{where} returned a non-finite observation ({bad}): fix "
                            "the env so observations are always finite numbers")
        problem = _obs_mismatch(space, obs)
        if problem is None:
            return None
        level, kind, message = problem
        if level == "error":
            raise self.fail("step", f"{where} {message}")
        if reported is None or kind not in reported:
            self.add(level, "step", f"{where} {message}")
        return kind

    def check_episode_length(self, rollout: _Rollout) -> None:
        assert self.env is not None
        clip = self.cfg.loop.clip_length
        spec = self.env.spec
        horizon = spec.max_episode_steps if spec is not None else None
        if horizon is not None and horizon < clip:
            self.add("error" if self.strict else "warn", "step",
                     f"episodes end after {horizon} steps, shorter than loop.clip_length "
                     f"{clip}: clips never cross an episode's end, so none would be "
                     f"collected; set loop.clip_length <= {horizon} (or raise "
                     "env.max_episode_steps)")
        elif horizon is None and not rollout.episode_lengths:
            self.add("warn", "step", f"no time limit, and no episode ended within {self.steps} "
                     "random steps: if episodes can run forever, set env.max_episode_steps "
                     "(evaluation waits for episodes to end)")
        elif rollout.episode_lengths and max(rollout.episode_lengths) < clip:
            self.add("warn", "step", f"random-policy episodes lasted at most "
                     f"{max(rollout.episode_lengths)} steps, shorter than loop.clip_length "
                     f"{clip}: early clips will be few; consider a shorter loop.clip_length")

    # -- 4. gymnasium's checker --------------------------------------------------------------

    def check_gymnasium(self) -> None:
        self.current = "gymnasium"
        from gymnasium.utils.env_checker import check_env

        if any(f.level == "error" for f in self.findings):
            self.add("info", "gymnasium", "check_env skipped until the problems above are fixed")
            return
        assert self.env is not None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                check_env(self.env.unwrapped, skip_render_check=True)
                failed = False
            except Exception as e:
                self.add("error", "gymnasium", f"check_env failed: {describe_exception(e)}")
                failed = True
        messages = []
        for w in caught:
            text = _ANSI.sub("", str(w.message)).removeprefix("WARN: ").strip()
            if issubclass(w.category, DeprecationWarning) or any(b in text for b in _GYM_BENIGN):
                continue
            if text not in messages:
                messages.append(text)
        for text in messages:
            self.add("warn", "gymnasium", text.splitlines()[0])
        if not failed and not messages:
            self.add("ok", "gymnasium", "gymnasium's check_env passed")

    # -- 5. render ---------------------------------------------------------------------------

    def check_render(self) -> None:
        self.current = "render"
        env = self.env
        assert env is not None
        level: Level = "error" if self.person else "warn"
        why = ("a person needs frames to compare clips" if self.person
               else "only a simulated teacher can label it")
        if not self.renders:
            modes = list(env.metadata.get("render_modes") or [])
            self.add(level, "render", f"{self.name} does not offer render_mode 'rgb_array' "
                     f"(metadata['render_modes'] = {modes}): add it and return an (H, W, 3) "
                     f"uint8 array from render(); {why}")
            return
        self.call("render", "reset(seed=1)", env.reset, seed=1)
        try:
            frame = self.frame(env)
            t0 = time.perf_counter()
            frame = self.frame(env)
            ms = (time.perf_counter() - t0) * 1000
        except Exception as e:
            self.renders = False
            self.add(level, "render", f"render() raised {describe_exception(e)}; {why}")
            return
        problem = _frame_problem(frame)
        if problem is not None:
            self.renders = False
            self.add(level, "render", f"render() in rgb_array mode returned {problem}: return "
                     f"an (H, W, 3) uint8 array; {why}")
            return
        h, w, _ = frame.shape
        self.add("ok", "render", f"rgb_array frames {w}x{h}, {ms:.1f} ms each")

    def frame(self, env: gym.Env) -> np.ndarray:
        if isinstance(self.adapter, MujocoState):
            # After mj_step the body poses lag qpos by one substep; the viewer's replay
            # renders after mj_forward, so compare against that.
            import mujoco

            mujoco.mj_forward(env.unwrapped.model, env.unwrapped.data)
        return env.render()

    # -- 6. state ----------------------------------------------------------------------------

    def check_state(self) -> None:
        self.current = "state"
        self.state_checked = True
        env, adapter = self.env, self.adapter
        assert env is not None
        if adapter is None:
            self.add("warn" if self.person else "info", "state",
                     f"{self.name} cannot save and restore its state (not a MuJoCo or "
                     "classic-control env, no get_state()/set_state()): clips cannot be "
                     "replayed, so frames must be recorded during rollouts; add "
                     "get_state() -> np.ndarray and set_state(state) to "
                     f"{self.name} (docs/custom_envs.md)")
            return
        fix = ("get_state() must return everything step() depends on and set_state() must "
               "write all of it back" if adapter.name == "custom" else
               f"the env keeps state beyond what the {adapter.name} adapter saves; give "
               f"{self.name} get_state()/set_state() methods that capture it")
        self.call("state", "reset(seed=2)", env.reset, seed=2)
        rng = np.random.default_rng(0)
        actions = [_sample(env.action_space, rng) for _ in range(30)]
        if _run(env, actions[:5]).done:
            raise self.fail("state", "the episode ended within 5 random steps of reset, too "
                            "soon to check save/restore")
        saved = self.call("state", "get_state()", adapter.get, env).copy()
        # NaN is the classic-control adapter's marker for "no last action"; nothing else.
        allowed = np.isnan(saved) if adapter.name == "classic-control" else False
        if saved.size == 0 or not np.all(np.isfinite(saved) | allowed):
            raise self.fail("state", f"get_state() returned {saved!r}: return a non-empty "
                            "vector of finite numbers")
        expected = _run(env, actions[5:15])
        _run(env, actions[15:30])  # wander off
        self.call("state", "set_state()", adapter.set, env, saved)
        self.compare_state(adapter.get(env), saved, "in the same env", fix)
        self.compare_steps(expected, _run(env, actions[5:5 + len(expected.obs)]),
                           "after set_state(get_state()) the env does not continue as before",
                           fix)
        self.fresh = self.make_env(render=self.frames and self.renders)
        self.call("state", "reset(seed=12345) of a fresh env", self.fresh.reset, seed=12345)
        fresh_adapter = state_adapter(self.fresh)
        assert fresh_adapter is not None
        self.call("state", "set_state() on a fresh env", fresh_adapter.set, self.fresh, saved)
        self.compare_state(fresh_adapter.get(self.fresh), saved, "in a fresh env", fix)
        self.compare_steps(expected, _run(self.fresh, actions[5:5 + len(expected.obs)]),
                           "restoring a saved state into a freshly reset env does not "
                           "reproduce the steps that followed it",
                           f"{fix} (including what reset() draws: goals, layouts, "
                           "randomised parameters)")
        self.restorable = True
        self.add("ok", "state", f"saved and restored through the {adapter.name} adapter "
                 f"({saved.size} values); restoring reproduces the next "
                 f"{len(expected.obs)} steps, in this env and in a fresh one")

    def compare_state(self, got: np.ndarray, saved: np.ndarray, where: str, fix: str) -> None:
        if got.shape != saved.shape or not np.allclose(got, saved, rtol=1e-9, atol=1e-12,
                                                       equal_nan=True):
            raise self.fail("state", f"get_state() after set_state(s) returns a different "
                            f"vector than s ({where}): {fix}")

    def compare_steps(self, expected: _Steps, got: _Steps, what: str, fix: str) -> None:
        n = min(len(expected.obs), len(got.obs))
        for t in range(n):
            a, b = expected.obs[t], got.obs[t]
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6):
                diff = np.abs(a - b).max() if a.shape == b.shape else np.inf
                raise self.fail("state", f"{what}: the observation after step {t + 1} differs "
                                f"(max |diff| {diff:.3g}); {fix}")
            if not np.isclose(expected.rewards[t], got.rewards[t], rtol=1e-5, atol=1e-6):
                raise self.fail("state", f"{what}: the reward of step {t + 1} differs "
                                f"({expected.rewards[t]:.6g} vs {got.rewards[t]:.6g}); {fix}")

    # -- 7. replayed frames ------------------------------------------------------------------

    def check_replay(self) -> None:
        self.current = "replay"
        env, adapter, fresh = self.env, self.adapter, self.fresh
        assert env is not None and adapter is not None and fresh is not None
        level: Level = "error" if self.person else "warn"
        self.call("replay", "reset(seed=3)", env.reset, seed=3)
        rng = np.random.default_rng(1)
        states, frames = [], []
        for t in range(24):
            if t % 4 == 0:  # 6 frames: MuJoCo frames cost tens of ms on a CPU
                states.append(adapter.get(env))
                frames.append(np.asarray(self.frame(env)))
            if _run(env, [_sample(env.action_space, rng)]).done:
                break
        _run(env, [_sample(env.action_space, rng) for _ in range(10)])
        worst: dict[str, tuple[int, float]] = {}
        for where, target in (("this env", env), ("a fresh env", fresh)):
            bad, worst_share = 0, 0.0
            for state, frame in zip(states, frames, strict=True):
                self.call("replay", "set_state()", adapter.set, target, state)
                replayed = np.asarray(self.call("replay", "render()", target.render))
                share = _frame_difference(frame, replayed)
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
            self.add(level, "replay", f"frames rendered from saved states differ from the "
                     f"rollout's frames: {detail}; {fix}")
        else:
            self.add("ok", "replay", f"frames rendered from {n} saved states match the "
                     "rollout's, in this env and in a fresh one")

    # -- reports -------------------------------------------------------------------------------

    def report_viewer(self) -> None:
        if not self.frames or not self.state_checked:
            return
        if not self.renders:
            self.add("info", "viewer", "none: without rgb_array frames only a simulated "
                     "teacher (teacher.kind: oracle, teacher.score) can label this env")
        elif self.restorable:
            self.add("info", "viewer", "state replay: clips keep the env's state per step; "
                     "the viewer renders frames on demand")
        elif self.adapter is None:
            env = self.cfg.env
            self.add("info", "viewer", "recorded frames: the state cannot be restored, so "
                     "frames are recorded at collection for candidate clips (env.frame_fraction "
                     f"{env.frame_fraction:g} of clips, at most {env.frame_size} px per side)")
        else:
            self.add("info", "viewer", "state replay, but restoring does not work (see "
                     "'state' above): clips would show the wrong behaviour")

    def report_network(self) -> None:
        if self.env is None or not self.spaces_ok:
            return
        from rlhf.reward.model import FeatureSpec, make_network

        r = self.cfg.reward
        spec = FeatureSpec.from_spaces(self.env.observation_space, self.env.action_space,
                                       r.use_action, r.use_next_obs)
        net = make_network(spec, r.ensemble, r.hidden)
        act = (f"{spec.action_dim} action" + (" (one-hot)" if spec.action_kind != "box" else "")
               if r.use_action else "no action")
        mflop = net.flops_per_input() / 1e6
        if spec.obs_is_image:
            c, h, w = net.chw
            layout = "CHW" if spec.channels_first else "HWC -> CHW"
            conv = ", ".join(f"{o}x{k}/{s}" for o, k, s in net.conv_layers)
            self.add("info", "reward-net", f"CNN (EnsembleCNN, {r.ensemble} members): "
                     f"{c}x{h}x{w} images ({layout}, /255) through conv [{conv}], then "
                     f"{net.conv_features} conv features + {act} inputs -> {r.hidden} -> 1; "
                     f"{mflop:.2f} MFLOP per step per member")
        else:
            obs = f"{spec.obs_dim} observation"
            if isinstance(self.env.observation_space, gym.spaces.Dict):
                keys = ", ".join(f"{k}({gym.spaces.flatdim(s)})"
                                 for k, s in self.env.observation_space.spaces.items())
                obs += f" (Dict flattened in key order: {keys})"
            nxt = f" + {spec.obs_dim} next-observation" if r.use_next_obs else ""
            self.add("info", "reward-net", f"MLP (EnsembleMLP, {r.ensemble} members): "
                     f"{spec.in_dim} inputs = {obs}{nxt} + {act} -> {r.hidden} -> 1")

    def check_score(self) -> None:
        spec = self.cfg.teacher.score
        if (spec is None or self.cfg.teacher.kind == "human" or self.rollout is None
                or not self.rollout.obs):
            return
        from rlhf.clips import batch_of_one, flatten_obs
        from rlhf.teachers import load_score_fn

        try:
            fn = load_score_fn(spec)
        except ConfigError as e:
            self.add("error", "score", str(e))
            return
        assert self.env is not None
        ro, space = self.rollout, self.env.observation_space
        t = min(self.cfg.loop.clip_length, len(ro.actions) - 1)
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
            self.add("error", "score", f"teacher.score {spec} raised {describe_exception(e)} "
                     f"on a {t}-step clip")
            return
        if scores.shape != (t,):
            self.add("error", "score", f"teacher.score {spec} returned shape {scores.shape} "
                     f"for a {t}-step clip: return one score per step, shape ({t},)")
        elif not np.all(np.isfinite(scores)):
            self.add("error", "score", f"teacher.score {spec} returned non-finite scores: "
                     "return finite numbers")
        else:
            self.add("ok", "score", f"teacher.score {spec} scores a {t}-step clip "
                     f"(return {scores.sum():.3g})")


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class _Steps:
    obs: list[np.ndarray]
    rewards: list[float]
    done: bool


def _close(env: gym.Env) -> None:
    u = env.unwrapped
    # Classic-control envs' close() calls pygame.quit(), which would also close a viewer
    # window open in this process; without a screen it closes nothing.
    if type(u).__module__.startswith("gymnasium.envs.classic_control"):
        u.screen = None
    with contextlib.suppress(Exception):  # closing a broken env must not hide the report
        env.close()


def _run(env: gym.Env, actions: list[Any]) -> _Steps:
    """Step ``env`` through ``actions`` until an episode ends; flat float observations."""
    out = _Steps([], [], False)
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.obs.append(_flat(env.observation_space, obs))
        out.rewards.append(float(reward))
        if terminated or truncated:
            out.done = True
            break
    return out


def _flat(space: gym.Space, obs: Any) -> np.ndarray:
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([np.asarray(obs[k], np.float64).ravel() for k in space.spaces])
    return np.asarray(obs, dtype=np.float64).ravel()


def _sample(space: gym.Space, rng: np.random.Generator) -> Any:
    """A random action from ``rng`` (the space's own RNG is left alone)."""
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high).astype(space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start + rng.integers(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (rng.integers(np.asarray(space.nvec)) + space.start).astype(space.dtype)
    return space.sample()


def _sb3_policy(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Dict):
        return "MultiInputPolicy"
    if _is_image_space(space):
        return "CnnPolicy"
    return "MlpPolicy"


def _is_image_space(space: gym.Space) -> bool:
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8
            and len(space.shape) == 3)


def _space_str(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        shape = "(" + ", ".join(map(str, space.shape)) + ("," if len(space.shape) == 1 else "")
        text = f"Box{shape}) {space.dtype}"
        lo, hi = np.unique(space.low), np.unique(space.high)
        if len(lo) == 1 and len(hi) == 1:
            text += f" in [{lo[0]:g}, {hi[0]:g}]"
        if _is_image_space(space):
            first = int(np.argmin(space.shape)) == 0
            text += " image, " + ("CHW" if first else "HWC")
        return text
    if isinstance(space, gym.spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {_space_str(s)}" for k, s in space.spaces.items()) + ")"
    return str(space)


def _obs_space_problems(space: gym.Space) -> list[tuple[Level, str]]:
    fix_flat = "wrap the env in gymnasium.wrappers.FlattenObservation, or use a Box"
    if isinstance(space, gym.spaces.Box):
        shape = space.shape
        if space.dtype == np.uint8 and len(shape) == 3:
            out: list[tuple[Level, str]] = []
            if int(np.argmin(shape)) == 1:
                out.append(("warn", f"image observation {shape}: the smallest axis is in the "
                            "middle, so it is read as (H, W, C); use (H, W, C) or (C, H, W)"))
            if not (np.all(space.low == 0) and np.all(space.high == 255)):
                out.append(("warn", "image observation bounds are not [0, 255]: SB3 will not "
                            "treat it as an image (CnnPolicy refuses it); declare "
                            f"Box(0, 255, {shape}, np.uint8)"))
            return out
        if space.dtype == np.uint8 and len(shape) == 2:
            return [("warn", f"2-D uint8 observation {shape} is read as a flat vector, not an "
                     f"image: give it a channel axis, shape {(*shape, 1)}, to get the CNN "
                     "reward network")]
        if len(shape) == 3:
            return [("warn", f"3-D {space.dtype} observation {shape} is flattened into "
                     f"{int(np.prod(shape))} inputs for an MLP reward network: images should "
                     "be uint8 in [0, 255] (H, W, C) or (C, H, W) to get the CNN")]
        if not np.issubdtype(space.dtype, np.number):
            return [("error", f"observation dtype {space.dtype} is not numeric: use a "
                     "float32 or uint8 Box")]
        return []
    if isinstance(space, gym.spaces.Dict):
        out = []
        for key, sub in space.spaces.items():
            if not isinstance(sub, gym.spaces.Box):
                out.append(("error", f"Dict observation entry {key!r} is {sub}: Dict "
                            f"observations are flattened for the reward model, which takes "
                            f"Box entries only; {fix_flat} for {key!r}"))
            elif _is_image_space(sub):
                out.append(("warn", f"Dict observation entry {key!r} is an image: Dict "
                            "observations are flattened for an MLP reward network, so it gets "
                            "no CNN; consider a separate pixel env or a feature vector"))
        return out
    if isinstance(space, gym.spaces.Discrete):
        return [("warn", f"{space} observations reach the reward model as one number (the "
                 "index); for categorical states wrap the env in "
                 "gymnasium.wrappers.FlattenObservation (one-hot)")]
    if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return []
    return [("error", f"observation space {type(space).__name__} is not supported by the "
             f"reward model: {fix_flat} or Dict of Box")]


def _action_space_problems(space: gym.Space) -> list[tuple[Level, str]]:
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        if isinstance(space, gym.spaces.Box) and not np.issubdtype(space.dtype, np.floating):
            return [("error", f"Box action space of dtype {space.dtype}: SB3 needs float "
                     "actions; use a float32 Box, or Discrete/MultiDiscrete for integers")]
        return []
    hint = (f" (MultiBinary({space.n}) is MultiDiscrete([2] * {space.n}))"
            if isinstance(space, gym.spaces.MultiBinary) else "")
    return [("error", f"action space {type(space).__name__} is not supported: use Box, "
             f"Discrete or MultiDiscrete{hint}")]


def _obs_mismatch(space: gym.Space, obs: Any) -> tuple[Level, str, str] | None:
    """(level, kind, message) for an observation that does not fit ``space``, or None."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict):
            return ("error", "type", f"returned a {type(obs).__name__} observation, but "
                    "observation_space is a Dict: return a dict with its keys")
        if set(obs) != set(space.spaces):
            return ("error", "keys", f"returned observation keys {sorted(obs)}, but "
                    f"observation_space has {sorted(space.spaces)}: make them match")
        for key, sub in space.spaces.items():
            problem = _obs_mismatch(sub, obs[key])
            if problem is not None:
                level, kind, message = problem
                return level, f"{key}.{kind}", f"(entry {key!r}) {message}"
        return None
    if isinstance(space, gym.spaces.Box):
        arr = np.asarray(obs)
        if arr.shape != space.shape:
            return ("error", "shape", f"returned an observation of shape {arr.shape}, but "
                    f"observation_space has shape {space.shape}: make observation_space match "
                    "what reset() and step() return")
        if arr.dtype != space.dtype:
            level: Level = "error" if space.dtype == np.uint8 else "warn"
            return (level, "dtype", f"returned {arr.dtype} observations, but observation_space "
                    f"is {space.dtype}: return {space.dtype} arrays (clips store them as "
                    f"{space.dtype})")
        if np.issubdtype(arr.dtype, np.number):
            low, high = space.low, space.high
            out = (arr < low) | (arr > high)
            if out.any():
                i = np.unravel_index(int(np.argmax(out)), arr.shape)
                index = "".join(f"[{j}]" for j in i)
                return ("warn", "bounds", f"returned obs{index} = {arr[i]:g}, outside "
                        f"observation_space's bounds [{low[i]:g}, {high[i]:g}]: widen the "
                        "bounds or clip the observation")
        return None
    if not space.contains(obs):
        return ("warn", "contains", f"returned {obs!r}, which observation_space {space} does "
                "not contain")
    return None


def _frame_problem(frame: Any) -> str | None:
    if frame is None:
        return "None"
    if not isinstance(frame, np.ndarray):
        return f"a {type(frame).__name__}"
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8 or frame.size == 0:
        return f"an array of shape {frame.shape} and dtype {frame.dtype}"
    return None


def _frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels differing by more than 8 levels in some channel (1.0: other shape)."""
    if a.shape != b.shape:
        return 1.0
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)
    return float((diff > 8).mean())
