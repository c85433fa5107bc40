"""``rlhf eval RUN_DIR --video OUT``: a GIF (or MP4) of the trained policy, written atomically,
beside the unchanged eval output. One tiny smoke run, trained in-process, serves every test.
(conftest.py sets SDL_VIDEODRIVER=dummy: Pendulum renders through pygame.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from rlhf.cli import main

ROOT = Path(__file__).parent.parent
TINY = ["loop.total_timesteps=256", "loop.total_labels=10", "loop.initial_timesteps=64",
        "loop.iterations=1", "loop.clip_length=10", "agent.kwargs.n_steps=64",
        "agent.kwargs.batch_size=32", "reward.ensemble=2", "eval.episodes=1",
        # 50-step episodes keep each eval and recording short
        "env.max_episode_steps=50",
        # one torch thread: on a busy 2-core machine two threads spin-wait on tiny batches
        "reward.threads=1", "--quiet"]


def _train(run_dir: Path, *overrides: str) -> Path:
    assert main(["train", str(ROOT / "configs" / "smoke.yaml"), *TINY, *overrides,
                 "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("video") / "run")


def _eval(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["eval", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("rlhf: error: "), err
    assert "Traceback" not in err
    return err


def test_eval_video_writes_a_gif_of_the_scored_episode(capsys, smoke_run, tmp_path):
    out = tmp_path / "sub" / "policy.gif"
    code, stdout, err = _eval(capsys, str(smoke_run), "--episodes", "1", "--video", str(out))
    assert code == 0, err
    lines = stdout.splitlines()
    # the eval's own line, as without --video, then the video's
    assert lines[0].startswith("true return over 1 episodes: ")
    eval_return = lines[0].split(": ")[1].split(" ")[0]
    assert lines[1].startswith(f"video: {out}, 1 episode (true return {eval_return}), ")
    # Pendulum renders 500x500 at 30 fps: a GIF keeps 320 px and 15 fps, every 2nd step
    assert lines[1].endswith("25 frames of 320x320 at 15 fps")
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.size == (320, 320)
        assert 1 < gif.n_frames <= 25
        assert gif.info["duration"] in (60, 70)  # 1000 / 15 ms, in 10 ms units
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy.gif"]  # no temp file left


def test_eval_video_json_options_and_overwrite(capsys, smoke_run, tmp_path):
    out = tmp_path / "v.gif"
    out.write_bytes(b"keep me")
    args = [str(smoke_run), "--episodes", "2", "--json", "--video", str(out),
            "--video-episodes", "2", "--video-fps", "30", "--video-size", "64"]
    code, stdout, err = _eval(capsys, *args)
    assert code == 2 and stdout == ""  # refused before any episode ran
    assert f"{out} already exists; use --force to overwrite it" in _one_line_error(err)
    assert out.read_bytes() == b"keep me"

    code, stdout, err = _eval(capsys, *args, "--force")
    assert code == 0, err
    result = json.loads(stdout)
    video = result.pop("video")
    assert set(result) == {"episodes", "mean", "std", "min", "max"} and result["episodes"] == 2
    # the recorded episodes are the two that eval scored (same seed, deterministic policy)
    assert sorted(video["returns"]) == pytest.approx([result["min"], result["max"]])
    assert video == {**video, "path": str(out), "episodes": 2, "frames": 100, "fps": 30.0,
                     "width": 64, "height": 64, "every": 1}
    with Image.open(out) as gif:
        assert gif.size == (64, 64) and 1 < gif.n_frames <= 100


def test_eval_video_user_errors_are_one_line(capsys, smoke_run, tmp_path):
    bad = tmp_path / "policy.avi"
    code, stdout, err = _eval(capsys, str(smoke_run), "--video", str(bad))
    assert code == 2 and stdout == ""
    assert f"{bad}: a video is written as .gif or .mp4, not '.avi'; give a path ending in " \
        ".gif" in _one_line_error(err)
    assert not bad.exists()

    code, _, err = _eval(capsys, str(smoke_run), "--force", "--video-episodes", "2")
    assert code == 2
    assert "--video-episodes, --force: these options go with --video" in _one_line_error(err)

    mp4 = tmp_path / "policy.mp4"
    code, stdout, err = _eval(capsys, str(smoke_run), "--episodes", "1", "--video", str(mp4))
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        assert code == 2 and stdout == ""
        assert "pip install imageio[ffmpeg], or give a .gif path" in _one_line_error(err)
        assert not mp4.exists()
    else:
        import imageio_ffmpeg

        assert code == 0, err
        assert "frames of 500x500 at 30 fps" in stdout
        assert imageio_ffmpeg.count_frames_and_secs(str(mp4))[0] == 50


def test_eval_video_of_an_env_without_frames(capsys, tmp_path):
    run = _train(tmp_path / "run", "env.id=broken_envs:NoRenderEnv")
    out = tmp_path / "x.gif"
    code, stdout, err = _eval(capsys, str(run), "--video", str(out))
    assert code == 2 and stdout == ""
    assert "broken_envs:NoRenderEnv cannot render rgb_array frames" in _one_line_error(err)
    assert not out.exists()
