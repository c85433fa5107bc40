"""``rlhf check-env``: the example envs pass; each deliberately broken env gets its one clear
line, from check-env and from ``rlhf train`` (exit code 2, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import rlhf_envs

from rlhf.checkenv import check, config_for, preflight
from rlhf.cli import main
from rlhf.config import load_config
from rlhf.environment import EnvError

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch) -> None:
    # MuJoCo appends its warnings to ./MUJOCO_LOG.TXT; keep that out of the repository.
    monkeypatch.chdir(tmp_path)


def check_env_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["check-env", *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out


def lines(out: str, level: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith(level)]


# -- the example envs ------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", sorted(rlhf_envs.SCORES))
def test_every_example_env_passes_check_env(capsys, env_id):
    code, out = check_env_cli(capsys, env_id)
    assert code == 0, out
    assert not lines(out, "ERROR"), out
    assert "ok    gymnasium  gymnasium's check_env passed" in out
    for check_name in ("render", "state", "replay"):
        assert f"ok    {check_name}" in out, out
    assert "state replay" in out  # the viewer's rendering path
    network = "EnsembleCNN" if "Pixels" in env_id else "EnsembleMLP"
    assert network in out


@pytest.mark.parametrize("config", ["reach2d", "reach2d_pixels", "reach2d_dict",
                                    "cheetah_backward"])
def test_every_example_config_passes_check_env(capsys, config):
    code, out = check_env_cli(capsys, str(ROOT / "configs" / f"{config}.yaml"), "--quick")
    assert code == 0, out
    assert not lines(out, "ERROR") and not lines(out, "WARN"), out
    assert "ok    score" in out  # the config's scripted score runs on a real clip


def test_stock_mujoco_free_camera_is_reported_with_its_fix(capsys):
    """HalfCheetah-v5's default free camera keeps the look-at point of earlier frames, so a
    fresh render env shows replayed states from elsewhere; the tracking camera fixes it."""
    code, out = check_env_cli(capsys, "HalfCheetah-v5", "--quick")
    assert code == 2
    (error,) = lines(out, "ERROR")
    assert "replay" in error and "env.kwargs: {camera_name: track}" in error
    code, out = check_env_cli(capsys, "HalfCheetah-v5", "env.kwargs={camera_name: track}",
                              "--quick")
    assert code == 0, out


# -- broken envs -----------------------------------------------------------------------------

BROKEN = [
    ("NoRenderEnv", "render", "does not offer render_mode 'rgb_array'"),
    ("WrongSpaceEnv", "step", "returned an observation of shape (2,), but observation_space "
                              "has shape (3,)"),
    ("ForgetfulStateEnv", "state", "after set_state(get_state()) the env does not continue as "
                                   "before"),
    ("NaNObsEnv", "step", "step() at step 3 returned a non-finite observation (obs[1] = nan)"),
    ("TrailEnv", "replay", "render() draws something the saved state does not hold"),
]


@pytest.mark.parametrize(("cls", "check_name", "message"), BROKEN)
def test_broken_env_gets_one_clear_line_from_check_env(capsys, cls, check_name, message):
    code, out = check_env_cli(capsys, f"broken_envs:{cls}")
    assert code == 2
    (error,) = lines(out, "ERROR")
    assert error.split()[1] == check_name and message in error, out
    assert "rlhf check-env: 1 blocking problem" in out


def test_rendering_problems_do_not_block_a_simulated_teacher(capsys):
    code, out = check_env_cli(capsys, "broken_envs:NoRenderEnv", "--simulated")
    assert code == 0
    (warning,) = lines(out, "WARN")
    assert "only a simulated teacher can label it" in warning


def test_env_without_state_trains_but_is_told_how_to_enable_replay(capsys):
    code, out = check_env_cli(capsys, "broken_envs:StatelessEnv")
    assert code == 0
    (warning,) = lines(out, "WARN")
    assert "add get_state() -> np.ndarray and set_state(state) to StatelessEnv" in warning
    assert "recorded frames" in out


@pytest.mark.parametrize(("env_id", "message"), [
    ("no_such_module:Env", "env.id: no module named 'no_such_module'"),
    ("broken_envs:SlideEnvv", "has no env class and registers no id named 'SlideEnvv' (did "
                              "you mean 'SlideEnv'?)"),
    ("broken_envs:gym", "is a module, not a gymnasium.Env subclass"),
    ("Pendulum-v9", "unknown environment 'Pendulum-v9' (did you mean 'Pendulum-v1'?)"),
])
def test_unknown_envs_are_one_line(capsys, env_id, message):
    code, out = check_env_cli(capsys, env_id)
    assert code == 2
    (error,) = lines(out, "ERROR")
    assert message in error


def test_clip_longer_than_episodes_blocks_with_a_config(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("env:\n  id: broken_envs:SlideEnv\n  max_episode_steps: 20\nloop:\n"
                   "  clip_length: 25\n")
    code, out = check_env_cli(capsys, str(cfg), "--quick")
    assert code == 2
    assert "set loop.clip_length <= 20" in lines(out, "ERROR")[0]


def test_agent_policy_must_read_dict_observations(capsys):
    code, out = check_env_cli(capsys, str(ROOT / "configs" / "reach2d_dict.yaml"),
                              "agent.policy=MlpPolicy", "--quick")
    assert code == 2
    assert "set agent.policy: MultiInputPolicy" in lines(out, "ERROR")[0]


def test_a_broken_score_function_is_reported(capsys):
    code, out = check_env_cli(capsys, str(ROOT / "configs" / "reach2d.yaml"),
                              "teacher.score=rlhf_envs.reach2d:sample_layout", "--quick")
    assert code == 2
    assert "teacher.score rlhf_envs.reach2d:sample_layout raised" in lines(out, "ERROR")[0]


# -- rlhf train refuses broken envs up front ------------------------------------------------

TINY = ["loop.total_timesteps=256", "loop.total_labels=10", "loop.initial_timesteps=64",
        "loop.iterations=1", "loop.clip_length=10", "env.n_envs=2", "agent.kwargs.n_steps=64",
        "agent.kwargs.batch_size=32", "reward.ensemble=2", "eval.episodes=1",
        # one torch thread: on a busy 2-core machine two threads spin-wait on tiny batches
        "reward.threads=1", "--quiet"]


@pytest.mark.parametrize(("cls", "check_name", "message"), BROKEN)
def test_rlhf_train_refuses_a_broken_env_in_one_line(capsys, tmp_path, cls, check_name,
                                                     message):
    run_dir = tmp_path / "run"
    code = main(["train", str(ROOT / "configs" / "reach2d.yaml"), f"env.id=broken_envs:{cls}",
                 "teacher.kind=human", "teacher.score=null", *TINY, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("rlhf: error: "), err
    assert f"broken_envs:{cls}: {check_name}: " in err and message in err
    assert "rlhf check-env broken_envs:" in err  # where to get the full report
    assert not run_dir.exists()  # nothing half-made


def test_rlhf_train_with_a_simulated_teacher_does_not_need_frames(tmp_path):
    cfg = load_config(ROOT / "configs" / "reach2d.yaml",
                      ["env.id=broken_envs:NoRenderEnv", "teacher.score=null",
                       "loop.clip_length=10"])
    report = preflight(cfg)
    assert report.ok and not any(f.check == "render" for f in report.findings)
    cfg.teacher.kind = "human"
    with pytest.raises(EnvError, match="does not offer render_mode 'rgb_array'"):
        preflight(cfg)


def test_nan_observations_mid_training_stop_the_run_in_one_line(capsys, tmp_path):
    """Past the up-front check (NaN only from step 40), the env stack catches it."""
    code = main(["train", str(ROOT / "configs" / "reach2d.yaml"),
                 "env.id=broken_envs:LateNaNEnv", "teacher.score=null", *TINY,
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert ("broken_envs:LateNaNEnv: step 40 of an episode returned a non-finite observation "
            "(obs[0] = nan)") in err


def test_cli_process_prints_one_line_and_exits_2(tmp_path):
    """The real console entry point, run where a user's env module lives (its directory
    is importable without installing it)."""
    env = {**os.environ, "PYTHONPATH": "", "SDL_VIDEODRIVER": "dummy"}
    out = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "train", str(ROOT / "configs" / "reach2d.yaml"),
         "env.id=broken_envs:NaNObsEnv", "teacher.score=null", *TINY,
         "--run-dir", str(tmp_path / "run")],
        cwd=TESTS, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("rlhf: error:")]
    assert len(errors) == 1 and "non-finite observation (obs[1] = nan)" in errors[0]

    out = subprocess.run([sys.executable, "-m", "rlhf.cli", "check-env",
                          "broken_envs:ForgetfulStateEnv"],
                         cwd=TESTS, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert "ERROR state" in out.stdout


# -- the report ------------------------------------------------------------------------------


def test_report_lists_spaces_viewer_path_and_network():
    cfg, from_file = config_for("rlhf_envs/Reach2DPixels-v0")
    assert not from_file and cfg.teacher.kind == "human"
    report = check(cfg, gym_checker=False)
    assert report.ok and report.person
    by_check = {f.check: f.message for f in report.findings}
    assert "Box(64, 64, 3) uint8" in by_check["spaces"] and "CnnPolicy" in by_check["spaces"]
    assert by_check["viewer"].startswith("state replay")
    assert "EnsembleCNN" in by_check["reward-net"] and "HWC -> CHW" in by_check["reward-net"]
