"""Preferential Bayesian optimisation (``rlhf tune``): real BoTorch GPs, real gymnasium envs,
real SQLite stores and the real viewer, on toy utilities with known optima and on the
Reach2D example."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pygame
import pytest

from rlhf.cli import main as cli_main
from rlhf.config import ParamConfig
from rlhf.rundir import RunDir
from rlhf.store import Store
from rlhf.tune import run_tune, tune
from rlhf.tune.model import read_comparisons
from rlhf.tune.run import resume_tune_config
from rlhf.tune.space import Space

ROOT = Path(__file__).resolve().parents[1]
OPTIMUM = np.array([0.7, 0.25])


class ToyEnv(gym.Env):
    """One step: the action is the parameter vector itself, rewarded by
    ``-|a - OPTIMUM[:d]|²``; the utility's optimum is known."""

    def __init__(self, dim: int = 2, render_mode: str | None = None):
        self.dim, self.render_mode = dim, render_mode
        self.observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.action_space = gym.spaces.Box(0, 1, (dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        return np.zeros(1, np.float32), -float(np.sum((a - OPTIMUM[:self.dim]) ** 2)), True, \
            False, {}


for _d in (1, 2):
    if f"test/Toy{_d}D-v0" not in gym.registry:
        gym.register(f"test/Toy{_d}D-v0", entry_point=ToyEnv, kwargs={"dim": _d})


def constant(params: dict) -> object:
    """The behaviour: always act the parameters (x, then y)."""
    a = np.array([params[k] for k in ("x", "y") if k in params], dtype=np.float32)
    return lambda obs: a


def wrong_actions(params: dict) -> object:
    return lambda obs: np.zeros(7, dtype=np.float32)


def raising(params: dict) -> object:
    raise ValueError("gain must be positive")


def toy_tune(tmp_path: Path, dim: int, comparisons: int, seed: int = 0, **kw):
    space = {"x": (0.0, 1.0), "y": (0.0, 1.0)}
    space = dict(list(space.items())[:dim])
    return tune(space, constant, "oracle", env=f"test/Toy{dim}D-v0", comparisons=comparisons,
                seed=seed, run_dir=tmp_path / f"run-{dim}-{seed}-{kw.get('strategy', 'eubo')}",
                log=lambda _: None, **kw)


def distance(params: dict) -> float:
    x = np.array([params[k] for k in ("x", "y") if k in params])
    return float(np.linalg.norm(x - OPTIMUM[:len(x)]))


# -- finding the optimum ----------------------------------------------------------------------


@pytest.mark.parametrize("dim,comparisons,threshold", [(1, 15, 0.1), (2, 20, 0.12)])
def test_recommendation_approaches_the_known_optimum(tmp_path, dim, comparisons, threshold):
    result = toy_tune(tmp_path, dim, comparisons)
    # The threshold is one that random recommendations fail: most uniform points of the
    # box are further away than that (so this test can fail).
    rng = np.random.default_rng(0)
    random_far = np.mean([distance(dict(zip("xy", rng.random(dim), strict=False)))
                          > threshold for _ in range(200)])
    assert random_far > 0.75
    assert distance(result.params) < threshold, result.params
    assert result.comparisons == comparisons
    # The GP's estimate ranks the optimum above a corner of the box.
    corner = np.zeros((1, dim))
    best = np.array([OPTIMUM[:dim]])
    assert result.gp.utility(best)[0][0] > result.gp.utility(corner)[0][0]


def test_same_seed_same_pairs_and_recommendation_and_a_resume_continues_identically(tmp_path):
    def pairs(run_dir: Path) -> list[tuple]:
        with Store(run_dir / "store.sqlite", readonly=True) as store:
            params = store.candidate_params()
            return [(params[q.clip_a], params[q.clip_b], q.iteration)
                    for q in store.queries()]

    a = toy_tune(tmp_path / "a", 2, 8, seed=3)
    b = toy_tune(tmp_path / "b", 2, 8, seed=3)
    assert pairs(a.run_dir) == pairs(b.run_dir) and len(pairs(a.run_dir)) == 8
    assert a.params == b.params and a.utility_mean == pytest.approx(b.utility_mean, rel=1e-9)
    c = toy_tune(tmp_path / "c", 2, 8, seed=4)
    assert pairs(c.run_dir) != pairs(a.run_dir)
    # Stopped after 5 and resumed to 8: the same 8 pairs as the uninterrupted run.
    d = toy_tune(tmp_path / "d", 2, 5, seed=3)
    # rlhf tune --resume cannot import a behaviour a script passed: it says so, nothing lost.
    assert cli_main(["tune", "--resume", str(d.run_dir), "tune.comparisons=8"]) == 2
    cfg = resume_tune_config(d.run_dir, ["tune.comparisons=8"])
    run_tune(cfg, resume=True, behaviour=constant, log=lambda _: None)
    assert pairs(d.run_dir) == pairs(a.run_dir)
    assert json.loads((d.run_dir / "best.json").read_text())["params"] == a.params


# -- the parameter space ----------------------------------------------------------------------


def test_space_respects_bounds_log_scale_and_integers():
    space = Space([ParamConfig("gain", 0.01, 100.0, log=True), ParamConfig("n", 2, 6,
                   integer=True), ParamConfig("w", -1.0, 1.0)])
    u = np.random.default_rng(0).random((2000, 3))
    x = space.from_unit(u)
    assert (x[:, 0] >= 0.01).all() and (x[:, 0] <= 100).all()
    assert (x[:, 2] >= -1).all() and (x[:, 2] <= 1).all()
    assert set(np.unique(x[:, 1])) == {2, 3, 4, 5, 6}
    # Each whole number gets an equal share of the cube; the log scale is even per decade.
    counts = np.bincount(x[:, 1].astype(int))[2:]
    assert counts.min() > 0.8 * counts.mean()
    decades = np.histogram(np.log10(x[:, 0]), bins=4, range=(-2, 2))[0]
    assert decades.min() > 0.8 * decades.mean()
    assert np.allclose(space.from_unit(np.array([[0.5, 0.5, 0.5]])), [[1.0, 4, 0.0]])
    np.testing.assert_allclose(space.to_unit(x)[:, [0, 2]], u[:, [0, 2]], atol=1e-12)
    snapped = space.snap(u)
    np.testing.assert_allclose(space.snap(snapped), snapped, atol=1e-12)
    d = space.as_dict(x[0])
    assert isinstance(d["n"], int) and isinstance(d["gain"], float)


def test_tuned_parameters_stay_in_their_space(tmp_path):
    seen: list[dict] = []

    def behaviour(params: dict):
        seen.append(params)
        return lambda obs: np.array([params["x"], 0.5], dtype=np.float32)

    space = [ParamConfig("x", 0.1, 0.9, log=True), ParamConfig("k", 1, 3, integer=True)]
    tune(space, behaviour, "oracle", env="test/Toy2D-v0", comparisons=6,
         run_dir=tmp_path / "run", log=lambda _: None)
    assert len(seen) == 1 + 12  # the centre of the space, tried before the run starts
    assert all(0.1 <= p["x"] <= 0.9 and p["k"] in (1, 2, 3) and isinstance(p["k"], int)
               for p in seen)


BAD_SPACES = {
    "low >= high": ("tune.params=[{name: a, low: 2, high: 1}]", "low (2) must be below high"),
    "unknown key": ("tune.params=[{name: a, low: 0, high: 1, colour: red}]",
                    "tune.params[0].colour: unknown key"),
    "log below zero": ("tune.params=[{name: a, low: 0, high: 1, log: true}]", "log-scale"),
    "integer bounds": ("tune.params=[{name: a, low: 0.5, high: 3, integer: true}]",
                       "whole-number"),
    "twice the name": ("tune.params=[{name: a, low: 0, high: 1}, {name: a, low: 0, high: 2}]",
                       "given twice"),
    "no parameters": ("tune.params=[]", "at least one parameter"),
    "unimportable behaviour": ("tune.behaviour=no_such_module:controller",
                               "no module named 'no_such_module'"),
    "missing attribute": ("tune.behaviour=rlhf_envs.tune_reach2d:nope", "nope"),
    "policy gives actions the env refuses": ("tune.behaviour=test_tune:wrong_actions",
                                             "the env refused the action"),
    "behaviour raises": ("tune.behaviour=test_tune:raising", "ValueError: gain must be"),
    "unknown strategy": ("tune.strategy=best", "tune.strategy: 'best' is not one of"),
    "unknown section key": ("tune.budget=3", "tune.budget: unknown key"),
    "no start states": ("tune.starts=0", "tune.starts: must be >= 1"),
}


@pytest.mark.parametrize("name", list(BAD_SPACES))
def test_a_bad_tuning_config_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, name):
    override, message = BAD_SPACES[name]
    run_dir = tmp_path / "run"
    code = cli_main(["tune", str(ROOT / "configs" / "tune_smoke.yaml"), override,
                     f"run_dir={run_dir}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("rlhf: error: ") and message in err, err
    assert not run_dir.exists()


def test_train_and_tune_refuse_each_others_configs(tmp_path, capsys):
    assert cli_main(["train", str(ROOT / "configs" / "tune_smoke.yaml")]) == 2
    assert "run it with rlhf tune" in capsys.readouterr().err
    assert cli_main(["tune", str(ROOT / "configs" / "smoke.yaml")]) == 2
    assert "rlhf train" in capsys.readouterr().err


# -- the store, the CLI and the viewer -------------------------------------------------------


def test_labels_of_a_tuning_run_round_trip_the_store(tmp_path):
    result = toy_tune(tmp_path, 2, 6)
    with Store(result.run_dir / "store.sqlite", readonly=True) as store:
        params = store.candidate_params()
        labels = store.labels()
        queries = {q.id: q for q in store.queries()}
        assert len(labels) == 6 and len(params) == 12
        for label in labels:  # the oracle preferred the behaviour nearer the optimum
            q = queries[label.query_id]
            near_a = distance(params[q.clip_a]) < distance(params[q.clip_b])
            assert label.choice == ("a" if near_a else "b")
        space = Space([ParamConfig("x", 0, 1), ParamConfig("y", 0, 1)])
        data = read_comparisons(store, space)
    assert data.m == 6 and data.ties == 0 and data.skips == 0
    winners = data.points[data.pairs[:, 0]]
    losers = data.points[data.pairs[:, 1]]
    assert (np.linalg.norm(winners - OPTIMUM, axis=1)
            < np.linalg.norm(losers - OPTIMUM, axis=1)).all()


@pytest.mark.parametrize("same_starts", [True, False])
def test_each_side_plays_the_same_start_states_one_episode_after_another(tmp_path,
                                                                          same_starts):
    from rlhf_envs.tune_reach2d import utility

    from rlhf.seeds import TUNE_PAIRS
    from rlhf.tune.behaviour import Rollouts, load_behaviour

    run_dir = tmp_path / "run"
    assert cli_main(["tune", str(ROOT / "configs" / "tune_smoke.yaml"), "tune.comparisons=3",
                     "tune.starts=3", f"tune.same_starts={str(same_starts).lower()}",
                     "tune.episode_steps=20", f"run_dir={run_dir}", "--quiet"]) == 0
    cfg = resume_tune_config(run_dir)
    rollouts = Rollouts(cfg.env, load_behaviour(cfg.tune.behaviour), 20)
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        params = store.candidate_params()
        queries = sorted(store.queries(), key=lambda q: q.iteration)
        assert len(queries) == 3
        for q in queries:
            first = TUNE_PAIRS + (0 if same_starts else 3 * q.iteration)  # seed 0
            for clip in store.get_clips([q.clip_a, q.clip_b]):
                # Three 20-step episodes, each from its own start, ending where it ends.
                assert len(clip) == 60 and np.flatnonzero(clip.dones).tolist() == [19, 39, 59]
                alone = [rollouts.clip(params[clip.id], first + j) for j in range(3)]
                np.testing.assert_allclose(clip.states, np.concatenate([c.states for c in alone]))
                # The taste is each episode's satisfaction, summed: not one long episode's.
                assert utility(clip).sum() == pytest.approx(
                    sum(utility(c).sum() for c in alone))
    rollouts.close()


def test_tune_smoke_from_the_cli_then_status_and_eval(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli_main(["tune", str(ROOT / "configs" / "tune_smoke.yaml"), "--run-dir",
                     str(run_dir), "--quiet"]) == 0
    assert "12 comparisons; best speed=" in capsys.readouterr().out
    best = json.loads((run_dir / "best.json").read_text())
    assert set(best["params"]) == {"speed", "clearance", "smoothing", "brake"}
    assert best["comparisons"] == 12 and best["utility_std"] > 0
    image = pygame.image.load(str(run_dir / "utility.png"))
    assert image.get_width() > 400
    assert cli_main(["status", str(run_dir), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["kind"] == "tune" and status["finished"] and status["labels"] == 12
    assert status["best"] == best["params"]
    assert cli_main(["status", str(run_dir)]) == 0
    assert "12/12 comparisons" in capsys.readouterr().out
    assert cli_main(["eval", str(run_dir), "--episodes", "2", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["params"] == best["params"] and evaluation["episodes"] == 2
    gif = tmp_path / "best.gif"
    assert cli_main(["eval", str(run_dir), "--episodes", "1", "--video", str(gif)]) == 0
    assert gif.stat().st_size > 1000
    # A finished run resumed is still finished: nothing asked, nothing lost.
    assert cli_main(["tune", "--resume", str(run_dir), "--quiet"]) == 0
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        assert store.counts().labels == 12 and store.counts().queries == 12
    assert cli_main(["tune", "--resume", str(run_dir), "tune.candidates=8"]) == 2
    assert "cannot be changed when resuming" in capsys.readouterr().err


def test_a_killed_simulated_run_resumes_to_the_same_pairs(tmp_path):
    """SIGKILL after a pair's candidates are stored but before its query: the resume asks
    that pair again, and the run ends with the pairs of an uninterrupted one."""
    cfg = str(ROOT / "configs" / "tune_smoke.yaml")
    env = {**os.environ, "RLHF_FAILPOINT": "ask:5"}
    killed = subprocess.run([sys.executable, "-m", "rlhf.cli", "tune", cfg, "--run-dir",
                             str(tmp_path / "killed"), "tune.comparisons=8", "--quiet"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Store(tmp_path / "killed" / "store.sqlite", readonly=True) as store:
        assert store.counts().labels == 4 and store.counts().queries == 4
    assert cli_main(["tune", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    assert cli_main(["tune", cfg, "--run-dir", str(tmp_path / "whole"), "tune.comparisons=8",
                     "--quiet"]) == 0

    def pairs(run: str) -> list:
        with Store(tmp_path / run / "store.sqlite", readonly=True) as store:
            params = store.candidate_params()
            return [(params[q.clip_a], params[q.clip_b]) for q in store.queries()]

    assert pairs("killed") == pairs("whole")


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def pending(run_dir: Path) -> int:
    if not (run_dir / "store.sqlite").exists() or not RunDir(run_dir).read_status():
        return 0
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        return store.counts().pending


def answer_one(run_dir: Path) -> None:
    """A person's answer, as the viewer stores it (claim, then label)."""
    with Store(run_dir / "store.sqlite") as store:
        query = store.claim_next_query("person", 30)
        assert query is not None
        store.add_viewer_label(query.id, "a", "person", shown_swapped=False,
                               response_time=1.0)


def test_a_person_tunes_in_the_viewer_and_a_kill_loses_no_comparison(tmp_path):
    """A human-teacher run: the viewer's screenshot shows both behaviours; answers land in
    the store; SIGKILL while a pair is on screen, resume, and every answer is still there."""
    from rlhf.viewer.layout import Layout

    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "rlhf.cli", "tune", str(ROOT / "configs" /
               "tune_reach2d.yaml"), "--run-dir", str(run_dir), "--no-viewer",
               "tune.comparisons=3", "viewer.width=960", "viewer.height=600"]
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    tuner = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: pending(run_dir) == 1)
        shot = tmp_path / "shot.png"
        assert cli_main(["label", str(run_dir), "--screenshot", str(shot)]) == 0
        image = pygame.surfarray.array3d(pygame.image.load(str(shot))).swapaxes(0, 1)
        lay = Layout.for_size(960, 600)
        panels = [image[r.top:r.bottom, r.left:r.right]
                  for r in (lay.left.inflate(-10, -10), lay.right.inflate(-10, -10))]
        for panel in panels:  # Reach2D's arena with its target, hazard and agent drawn
            assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 5
        assert not np.array_equal(*panels)  # two different behaviours
        answer_one(run_dir)
        wait_for(lambda: pending(run_dir) == 1 and labels(run_dir) == 1)
        tuner.kill()  # SIGKILL with the second pair on screen
        tuner.wait(30)
    finally:
        if tuner.poll() is None:
            tuner.kill()
    assert labels(run_dir) == 1
    resumed = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "tune", "--resume",
                                str(run_dir), "--no-viewer", "--quiet"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for n in (1, 2):  # the pending pair is still there; then the third
            wait_for(lambda n=n: pending(run_dir) == 1 and labels(run_dir) == n)
            answer_one(run_dir)
        out, _ = resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 0, out
    assert "3 comparisons" in out
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        assert store.counts().labels == 3 and store.counts().queries == 3
    assert json.loads((run_dir / "best.json").read_text())["comparisons"] == 3


def labels(run_dir: Path) -> int:
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        return store.counts().labels


def test_the_pendulum_example_swings_up_with_good_gains_and_not_with_bad():
    from rlhf_envs.tune_pendulum import controller

    env = gym.make("Pendulum-v1")

    def ret(params: dict) -> float:
        obs, _ = env.reset(seed=5)
        policy, total, done = controller(params), 0.0, False
        while not done:
            obs, r, terminated, truncated, _ = env.step(policy(obs))
            total, done = total + r, terminated or truncated
        return total

    good = ret({"energy_gain": 0.5, "kp": 20.0, "kd": 3.8, "catch_angle": 0.5})
    weak = ret({"energy_gain": 0.05, "kp": 1.0, "kd": 0.1, "catch_angle": 0.1})
    assert good > -400 > weak
    env.close()
