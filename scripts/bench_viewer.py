#!/usr/bin/env python
"""Benchmarks of the labeling viewer, headless. Results go in BENCHMARKS.md.

    python scripts/bench_viewer.py playback [--speed 2]   # fps of both clips playing, + HUD
    python scripts/bench_viewer.py latency [--pairs 40]   # key press -> next pair on screen
    python scripts/bench_viewer.py render                 # state-replay frames per second
    python scripts/bench_viewer.py all [--json out.json]

The viewer runs its real window loop on SDL's dummy video driver (no display) and MuJoCo
renders through EGL (``MUJOCO_GL=egl``; set ``osmesa`` where EGL is missing). Each
``cmd_*`` function returns rows (dicts), so another benchmark script can call it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf.config import EnvConfig, load_config  # noqa: E402
from rlhf.rundir import RunDir, reserve_store  # noqa: E402
from rlhf.store import Store  # noqa: E402


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"python {platform.python_version()}")


def build_run(path: Path, env_id: str = "Pendulum-v1", n_clips: int = 12,
              clip_length: int = 25, queries: int = 40, seed: int = 0,
              overrides: tuple[str, ...] = ()) -> RunDir:
    """A run directory whose store holds real clips (random actions) and ``queries`` pairs
    of them, as a trainer with a human teacher leaves it."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlhf.clips import ClipCollector
    from rlhf.environment import env_factory

    cfg = load_config(overrides=[f"run_dir={path}", f"env.id={env_id}", "teacher.kind=human",
                                 f"loop.clip_length={clip_length}", *overrides])
    # The benchmark's own scratch run, labelled by its scripted key presses: start afresh
    # (--force would keep those "person's" labels aside, one copy per benchmark run).
    shutil.rmtree(path, ignore_errors=True)
    reserve_store(cfg)  # with store.url: the run's tables on the server
    run, lock = RunDir.create(cfg)
    lock.release()
    venv = DummyVecEnv([env_factory(cfg.env)])
    venv.seed(seed)
    collector = ClipCollector(venv, clip_length)
    collector.reset()
    rng = np.random.default_rng(seed)
    low, high = venv.action_space.low, venv.action_space.high
    while len(collector.pool) < n_clips:
        collector.step(rng.uniform(low, high, size=(1, *low.shape)).astype(np.float32))
    venv.close()
    location = run.store_location(cfg)
    with Store(location, create=isinstance(location, Path)) as store:
        ids = [c.id for c in store.add_clips(list(collector.pool)[:n_clips])]
        pairs = [(ids[i % n_clips], ids[(i + 1 + i // n_clips) % n_clips])
                 for i in range(queries)]
        store.add_queries([(a, b) for a, b in pairs if a != b], iteration=0)
    return run


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# -- playback ----------------------------------------------------------------------------------


def cmd_playback(args: argparse.Namespace) -> list[dict]:
    """Frames per second of both clips playing at ``--speed``: what the real loop achieves
    (its target is the env's render_fps times the speed), and what drawing alone could do."""
    from rlhf.viewer.app import ViewerApp

    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(Path(tmp) / "run", clip_length=50, queries=4,
                        overrides=(f"viewer.speed={args.speed}",))
        app = ViewerApp(run.path, seed=0)
        app.open()
        try:
            assert app.run_until(lambda: app.current is not None, 30), "no pair came up"
            app.run_until(lambda: False, 0.3)
            speed, target = app.playback.speed, app.playback.frames_per_second
            f0, t0 = app.frames_drawn, time.perf_counter()
            app.run_until(lambda: False, args.seconds)
            achieved = (app.frames_drawn - f0) / (time.perf_counter() - t0)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 2.0:  # drawing alone, as fast as it goes
                app.playback.advance(1 / target)
                app.draw()
                n += 1
            capacity = n / (time.perf_counter() - t0)
        finally:
            app.close()
    row = {"bench": "playback", "env": "Pendulum-v1", "speed": speed,
           "target_fps": round(target, 1), "achieved_fps": round(achieved, 1),
           "draw_capacity_fps": round(capacity, 1), "window": list(app.layout.size)}
    print(json.dumps(row), flush=True)
    return [row]


# -- latency -----------------------------------------------------------------------------------


def _person(app, posted: list[float], pairs: int, think: tuple[float, float],
            rng: np.random.Generator) -> None:
    """Answers each new pair after thinking for a while, noting when each key went in."""
    import pygame

    seen = 0
    while len(posted) < pairs and app.running:
        if app.pairs_shown > seen:
            seen = app.pairs_shown
            time.sleep(rng.uniform(*think))
            posted.append(time.perf_counter())
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_LEFT))
        time.sleep(0.001)


def latency_row(env_id: str, pairs: int, think: tuple[float, float],
                store_url: str | None = None) -> dict:
    from rlhf.viewer.app import ViewerApp

    store = () if store_url is None else (f"store.url={store_url}",
                                          f"store.run=bench-viewer-{time.time_ns()}")
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(Path(tmp) / "run", env_id=env_id, clip_length=25, queries=pairs + 2,
                        n_clips=8, overrides=store)
        app = ViewerApp(run.path, seed=0)
        app.open()
        posted: list[float] = []
        latencies, prepare = [], []
        try:
            assert app.run_until(lambda: app.current is not None, 60), "no pair came up"
            threading.Thread(target=_person, daemon=True, args=(
                app, posted, pairs, think, np.random.default_rng(0))).start()
            shown = app.pairs_shown
            end = time.monotonic() + pairs * (think[1] + 5)
            while len(latencies) < pairs and time.monotonic() < end:
                app.tick()
                if app.pairs_shown > shown:
                    shown = app.pairs_shown
                    latencies.append(app.last_pair_shown_at - posted[-1])
                    prepare.append(app.current.seconds)
        finally:
            app.close()
    ms = [1000 * x for x in latencies]
    return {"bench": "key_to_next_pair", "env": env_id,
            "store": "sqlite" if store_url is None else "postgresql", "pairs": len(ms),
            "median_ms": round(statistics.median(ms), 1),
            "p95_ms": round(_percentile(ms, 95), 1), "max_ms": round(max(ms), 1),
            "prepare_median_ms": round(1000 * statistics.median(prepare), 1),
            "think_s": list(think)}


def cmd_latency(args: argparse.Namespace) -> list[dict]:
    """Key press to the next pair's first frame on screen, with pairs prepared in the
    background while the current one plays (a person takes ``--think`` seconds to answer).
    ``prepare_median_ms`` is what each pair would cost in the foreground."""
    rows = []
    for env_id in args.latency_envs:
        rows.append(latency_row(env_id, args.pairs, tuple(args.think), args.store_url))
        print(json.dumps(rows[-1]), flush=True)
    return rows


# -- state-replay rendering --------------------------------------------------------------------


def cmd_render(args: argparse.Namespace) -> list[dict]:
    """Frames per second of state replay (set state, render) in a private render env."""
    import gymnasium as gym

    from rlhf.environment import state_adapter
    from rlhf.render import StateReplay

    rows = []
    for env_id in args.render_envs:
        env = gym.make(env_id)
        env.reset(seed=0)
        env.action_space.seed(0)
        adapter = state_adapter(env)
        states = []
        for _ in range(args.frames):
            states.append(adapter.get(env))
            env.step(env.action_space.sample())
        env.close()
        replay = StateReplay(EnvConfig(id=env_id))
        try:
            frame = replay.frame(states[0])  # warm-up: GL context, fonts, assets
            t0 = time.perf_counter()
            for s in states:
                replay.frame(s)
            fps = len(states) / (time.perf_counter() - t0)
        finally:
            replay.close()
        row = {"bench": "state_replay_render", "env": env_id, "frames": len(states),
               "fps": round(fps, 1), "frame_shape": list(frame.shape),
               "mujoco_gl": os.environ.get("MUJOCO_GL")}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["playback", "latency", "render", "all"])
    p.add_argument("--speed", type=float, default=2.0, help="playback: speed (1, 1.5, 2, ...)")
    p.add_argument("--seconds", type=float, default=5.0, help="playback: seconds measured")
    p.add_argument("--pairs", type=int, default=40, help="latency: answers measured")
    p.add_argument("--think", type=float, nargs=2, default=[0.4, 0.8],
                   help="latency: a person's answer time, uniform in [lo, hi] seconds")
    p.add_argument("--latency-envs", nargs="+", default=["Pendulum-v1"])
    p.add_argument("--store-url", help="latency: the store on this PostgreSQL server "
                                       "(default: SQLite in the run directory)")
    p.add_argument("--render-envs", nargs="+", default=["Pendulum-v1", "HalfCheetah-v5"])
    p.add_argument("--frames", type=int, default=100, help="render: frames timed per env")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    print(f"# machine: {machine()}", flush=True)
    cmds = {"playback": [cmd_playback], "latency": [cmd_latency], "render": [cmd_render],
            "all": [cmd_playback, cmd_latency, cmd_render]}[args.what]
    rows = [row for cmd in cmds for row in cmd(args)]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
