"""Careless and hostile use of whole runs: nothing a command does may cost a run its labels.

Each test is one class of attack from the reliability work: output paths over a run's files,
``--force`` on a directory that is not a run, two trainers on one run, a run whose store has
gone, a resume override that fails, an env that raises mid-run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.cli import main as cli_main
from rlhf.lock import LOCK_NAME, TrainerLock
from rlhf.store import Store

ROOT = Path(__file__).parent.parent
TINY = ["loop.total_timesteps=512", "loop.total_labels=10", "loop.iterations=1",
        "loop.initial_timesteps=200", "eval.episodes=1", "--quiet"]


def _labels(run_dir: Path) -> list[tuple[int, str]]:
    with Store(run_dir / "store.sqlite") as store:
        return [(lab.query_id, lab.choice) for lab in store.labels()]


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


# -- output files: a screenshot (or plot, or video) never writes over anything --------------


def test_screenshot_onto_the_runs_own_store_is_refused_and_the_labels_stay(run_copy, capsys):
    before = _labels(run_copy)
    store = run_copy / "store.sqlite"
    for force in ([], ["--force"]):
        code = cli_main(["label", str(run_copy), "--screenshot", str(store), *force])
        assert code == 2
        assert "screenshot" in _one_line_error(capsys.readouterr().err)
    # Renamed to look like an image, inside the run: still refused, even with --force.
    link = run_copy / "store.png"
    link.symlink_to(store)
    assert cli_main(["label", str(run_copy), "--screenshot", str(link), "--force"]) == 2
    assert "inside the run directory" in _one_line_error(capsys.readouterr().err)
    assert _labels(run_copy) == before and len(before) == 30


def test_screenshot_refuses_an_existing_file_unless_forced_and_writes_atomically(
        run_copy, tmp_path, capsys):
    out = tmp_path / "mine.png"
    out.write_bytes(b"a picture the user made")
    assert cli_main(["label", str(run_copy), "--screenshot", str(out)]) == 2
    assert "already exists; use --force" in _one_line_error(capsys.readouterr().err)
    assert out.read_bytes() == b"a picture the user made"
    assert cli_main(["label", str(run_copy), "--screenshot", str(out), "--force"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp
    jpg = tmp_path / "shot.jpg"
    assert cli_main(["label", str(run_copy), "--screenshot", str(jpg)]) == 0
    assert jpg.read_bytes()[:2] == b"\xff\xd8"  # the suffix chose the format
    capsys.readouterr()
    notes = tmp_path / "notes.txt"
    assert cli_main(["label", str(run_copy), "--screenshot", str(notes), "--force"]) == 2
    assert "not '.txt'" in _one_line_error(capsys.readouterr().err)


def test_plot_and_video_outputs_follow_the_same_rule(run_copy, tmp_path, capsys):
    metrics = run_copy / "metrics.csv"
    before = metrics.read_bytes()
    assert cli_main(["plot", str(run_copy), "--out", str(run_copy / "curves.png")]) == 2
    assert "inside the run directory" in _one_line_error(capsys.readouterr().err)
    out = tmp_path / "c.png"
    out.write_bytes(b"keep")
    assert cli_main(["plot", str(run_copy), "--out", str(out)]) == 2
    assert "already exists" in _one_line_error(capsys.readouterr().err)
    assert out.read_bytes() == b"keep"
    assert cli_main(["eval", str(run_copy), "--episodes", "1", "--video",
                     str(run_copy / "config.gif"), "--force"]) == 2
    assert "inside the run directory" in _one_line_error(capsys.readouterr().err)
    assert metrics.read_bytes() == before


# -- --force: only a run directory, and never a person's labels ----------------------------


def test_force_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    mine = tmp_path / "thesis"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "chapter1.tex").write_text("months of work")
    (mine / "metrics.csv").write_text("my,data\n")
    (mine / "config.yaml").write_text("not: an rlhf config\n")
    code = cli_main(["train", "configs/smoke.yaml", "--run-dir", str(mine), "--force", *TINY])
    assert code == 2
    assert "--force" in _one_line_error(capsys.readouterr().err)
    assert (mine / "checkpoints" / "chapter1.tex").read_text() == "months of work"
    assert (mine / "metrics.csv").read_text() == "my,data\n"
    # A run directory with a stranger in it is not provably a run either.
    (mine / "config.yaml").unlink()
    shutil.copy(ROOT / "configs" / "smoke.yaml", mine / "config.yaml")
    assert cli_main(["train", "configs/smoke.yaml", "--run-dir", str(mine), "--force",
                     *TINY]) == 2
    assert "not an rlhf run directory" in _one_line_error(capsys.readouterr().err)
    assert (mine / "checkpoints" / "chapter1.tex").exists()


def test_force_removes_a_simulated_run_and_says_what(run_copy, capsys):
    code = cli_main(["train", "configs/smoke.yaml", "--run-dir", str(run_copy), "--force",
                     *TINY])
    assert code == 0
    out = capsys.readouterr().out
    assert "--force: removed the previous run's" in out and "store.sqlite" in out
    assert len(_labels(run_copy)) == 10  # the new run's own labels


def test_force_moves_a_persons_labels_aside_instead_of_deleting_them(run_copy, capsys):
    with Store(run_copy / "store.sqlite") as store:
        query = store.add_queries([(1, 2)], iteration=9)[0]
        store.add_label(query.id, "a", teacher="alice")
    before = _labels(run_copy)
    code = cli_main(["train", "configs/smoke.yaml", "--run-dir", str(run_copy), "--force",
                     *TINY])
    assert code == 0
    out = capsys.readouterr().out
    assert "1 labels given by a person" in out
    (aside,) = run_copy.parent.glob("run.replaced-*")
    assert _labels(aside) == before


# -- one trainer per run ------------------------------------------------------------------


def test_a_second_trainer_is_refused_with_the_holders_pid(run_copy, capsys):
    config = (run_copy / "config.yaml").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rlhf.lock import TrainerLock; "
         "TrainerLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         str(run_copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["train", "--resume", str(run_copy), "eval.episodes=2"],
                     ["train", "configs/smoke.yaml", "--run-dir", str(run_copy), "--force"]):
            assert cli_main([*argv, "--quiet"]) == 2
            line = _one_line_error(capsys.readouterr().err)
            assert f"another trainer (process {holder.pid}) is running this run" in line
        assert (run_copy / "config.yaml").read_bytes() == config
        # Readers stay concurrent: status works while a trainer holds the run.
        assert cli_main(["status", str(run_copy)]) == 0
    finally:
        holder.send_signal(signal.SIGKILL)  # a kill frees the lock: no stale lock file
        holder.wait()
    with TrainerLock.acquire(run_copy):
        pass
    assert (run_copy / LOCK_NAME).exists()


def test_two_resumes_at_once_one_runs_one_is_refused_and_the_budget_holds(tmp_path):
    run_dir = tmp_path / "stopped"
    # Killed in iteration 1's checkpoint write: a resume must train that iteration again.
    killed = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml",
                             "--run-dir", str(run_dir), *TINY[:-1], "loop.iterations=2",
                             "loop.total_timesteps=1024", "--quiet"], cwd=ROOT,
                            env={**os.environ, "RLHF_FAILPOINT": "checkpoint:2"},
                            capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    cmd = [sys.executable, "-m", "rlhf.cli", "train", "--resume", str(run_dir), "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], results
    refused = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode)
    assert "another trainer" in _one_line_error(refused)
    with Store(run_dir / "store.sqlite") as store:
        counts = store.counts()
    assert counts.queries == counts.labels == 10  # not one query over the budget


# -- a run whose store is gone -----------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "empty", "dangling-symlink"])
def test_resume_refuses_a_run_whose_store_is_gone(run_copy, tmp_path, capsys, damage):
    store = run_copy / "store.sqlite"
    store.unlink()
    for side in ("-wal", "-shm"):
        Path(f"{store}{side}").unlink(missing_ok=True)
    if damage == "empty":
        store.write_bytes(b"")
    elif damage == "dangling-symlink":
        store.symlink_to(tmp_path / "usb-stick" / "store.sqlite")
    assert cli_main(["train", "--resume", str(run_copy), "--quiet"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "store.sqlite" in line and ("restore" in line)
    assert not (tmp_path / "usb-stick").exists()  # nothing created through the link
    if damage == "missing":
        assert not store.exists()
    elif damage == "empty":
        assert store.stat().st_size == 0
    assert cli_main(["status", str(run_copy)]) == 2  # status does not report success
    capsys.readouterr()


# -- a resume override that fails is not written into config.yaml -------------------------


def test_a_failing_resume_override_leaves_config_yaml_as_it_was(run_copy, capsys):
    config = (run_copy / "config.yaml").read_bytes()
    # No machine has 100 GPUs: this device fails everywhere, as cuda does on a CPU machine.
    assert cli_main(["train", "--resume", str(run_copy), "reward.device=cuda:99",
                     "--quiet"]) == 2
    assert "reward.device: 'cuda:99'" in _one_line_error(capsys.readouterr().err)
    assert (run_copy / "config.yaml").read_bytes() == config
    # A good override is written once the run has restored with it.
    assert cli_main(["train", "--resume", str(run_copy), "eval.episodes=2", "--quiet"]) == 0
    assert "episodes: 2" in (run_copy / "config.yaml").read_text()


# -- an env that raises mid-run ----------------------------------------------------------


def test_an_exception_in_the_users_env_step_checkpoints_and_names_env_step_and_resume(
        tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "crash"
    monkeypatch.setenv("RLHF_TEST_CRASH_AFTER", "300")  # after checkpoint 0, in iteration 1
    argv = ["train", "configs/smoke.yaml", "env.id=broken_envs:CrashingEnv", "--run-dir",
            str(run_dir), *TINY]
    assert cli_main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    # Instance step 301 is step 21 of an episode (60 steps each).
    assert "broken_envs:CrashingEnv: step 21 of an episode raised RuntimeError: simulator " \
           "lost contact (at broken_envs.py:" in line
    assert f"resume with: rlhf train --resume {run_dir}" in line
    assert "checkpoint saved at" in line
    labels = _labels(run_dir)
    assert labels and (run_dir / "checkpoints" / "LATEST").exists()
    monkeypatch.delenv("RLHF_TEST_CRASH_AFTER")  # the user fixes the simulator
    assert cli_main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert set(labels) <= set(_labels(run_dir))


def test_kill_9_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml",
                             "--run-dir", str(run_dir), *TINY], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 120
    while not (run_dir / "checkpoints" / "LATEST").exists() and time.time() < end:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume", str(run_dir),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_start_killed_before_its_config_leaves_a_directory_that_starts_again(tmp_path,
                                                                               capsys):
    # Killed between taking the lock and writing config.yaml: nothing to resume, and the
    # same command must work again without --force (which would refuse: no config.yaml).
    aborted = tmp_path / "aborted"
    (aborted / "checkpoints").mkdir(parents=True)
    (aborted / LOCK_NAME).write_text("12345\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for run_dir in (aborted, empty):
        assert cli_main(["train", "configs/smoke.yaml", "--run-dir", str(run_dir), *TINY]) == 0
    capsys.readouterr()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("mine")
    assert cli_main(["train", "configs/smoke.yaml", "--run-dir", str(not_a_dir), *TINY]) == 2
    assert "is not a directory" in _one_line_error(capsys.readouterr().err)
    assert not_a_dir.read_text() == "mine"
