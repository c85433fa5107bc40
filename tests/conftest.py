"""Shared test fixtures: a tiny toy env with a known optimum, headless settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")
# What the tests share with the benchmarks (the per-member reference ensemble, the
# random-action floor) lives in scripts/, not in the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import gymnasium as gym
import numpy as np
import pytest


class LineEnv(gym.Env):
    """A point on a line; reward -|x - 1|, so moving toward x = 1 is better.

    Episodes last ``horizon`` steps (then truncate). State: [x, t]. Observation: [x, t/horizon].
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, horizon: int = 10, render_mode: str | None = None):
        self.horizon = horizon
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.x, self.t = 0.0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.t / self.horizon], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-2, 2)), 0
        return self._obs(), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.5 * float(np.asarray(action).ravel()[0]), -10, 10))
        self.t += 1
        reward = -abs(self.x - 1.0)
        return self._obs(), reward, False, self.t >= self.horizon, {}

    def get_state(self) -> np.ndarray:
        return np.array([self.x, self.t], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        self.x, self.t = float(state[0]), int(state[1])

    def render(self) -> np.ndarray:
        frame = np.zeros((8, 40, 3), dtype=np.uint8)
        frame[:, int(np.clip((self.x + 10) * 2, 0, 39))] = 255
        return frame


if "test/Line-v0" not in gym.registry:
    gym.register("test/Line-v0", entry_point=LineEnv)


@pytest.fixture
def line_env_id() -> str:
    return "test/Line-v0"


FINISHED_RUN = ["configs/smoke.yaml", "agent.normalize_obs=true", "eval.episodes=1", "--quiet"]
"""The smoke preset (30 simulated labels, checkpoints after iterations 1 and 2), with
observation normalisation on so that obs_rms.npz is read back."""


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished smoke run, made once per test session; tests copy it before damaging it."""
    from rlhf.cli import main

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *FINISHED_RUN, "--run-dir", str(run_dir)]) == 0
    return run_dir


# -- the store's two backends ------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url():
    """The URL of a PostgreSQL server for the tests: ``RLHF_TEST_PG_URL``, or a throw-away
    cluster started for this session (tests/pg.py). No server binaries: the test fails and
    says what to install (``RLHF_TEST_PG=off`` skips the PostgreSQL tests instead)."""
    if os.environ.get("RLHF_TEST_PG_URL"):
        yield os.environ["RLHF_TEST_PG_URL"]
        return
    cluster = throwaway_cluster()
    try:
        yield cluster.url
    finally:
        cluster.close()


def throwaway_cluster():
    """A PostgreSQL cluster of the caller's own (tests/pg.py), started; skipped with
    ``RLHF_TEST_PG=off``, failing with what to install where there are no server binaries."""
    if os.environ.get("RLHF_TEST_PG") == "off":
        pytest.skip("RLHF_TEST_PG=off: the PostgreSQL backend is not tested")
    from pg import INSTALL, Cluster, server_bin

    if server_bin() is None:
        pytest.fail(INSTALL)
    return Cluster()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request, tmp_path):
    """Where a test's store lives, on each backend: ``store_at("name")`` is a path in the
    test's directory (SQLite) or a fresh run on the test server (PostgreSQL)."""
    import uuid

    from rlhf.store_pg import PgLocation

    if request.param == "sqlite":
        return lambda name="s": tmp_path / f"{name}.sqlite"
    url = request.getfixturevalue("pg_url")
    prefix = uuid.uuid4().hex[:12]
    return lambda name="s": PgLocation(url, f"t{prefix}-{name}")
