"""Crash safety: kill a training subprocess, resume it, lose nothing, ask nothing twice."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.store import Store

ROOT = Path(__file__).parent.parent
RUN = ["loop.total_timesteps=2048", "loop.iterations=4", "loop.total_labels=40",
       "eval.every=0", "eval.episodes=1"]


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml", *RUN, *extra,
         "--run-dir", str(run_dir), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(pred, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _iteration(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "status.json").read_text())["iteration"]
    except (OSError, ValueError, KeyError):
        return -1


def _labels(run_dir: Path) -> list[tuple[int, str]]:
    with Store(run_dir / "store.sqlite") as store:
        return [(lab.query_id, lab.choice) for lab in store.labels()]


def _resume(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume", str(run_dir),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _check_finished(run_dir: Path, before: list[tuple[int, str]]) -> None:
    after = _labels(run_dir)
    assert set(before) <= set(after)  # every label answered before the kill is there
    with Store(run_dir / "store.sqlite") as store:
        counts = store.counts()
        pairs = [(q.clip_a, q.clip_b) for q in
                 (store.get_query(i) for i in range(1, counts.queries + 1))]
    assert counts.queries == 40 and counts.labels == 40 and counts.pending == 0
    assert counts.label_events == 40  # each query answered exactly once
    assert len(set(pairs)) == len(pairs)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["finished"] and status["timesteps"] == 2048
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    iterations = [int(line.split(",")[0]) for line in metrics[1:]]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 4


@pytest.mark.parametrize("when", [1, 2])
def test_kill_9_mid_run_then_resume(tmp_path, when):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for(lambda: _iteration(run_dir) >= when)
    time.sleep(0.2 * when)  # land somewhere inside the next iteration
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _labels(run_dir)
    assert before
    out = _resume(run_dir)
    assert out.returncode == 0, out.stderr
    _check_finished(run_dir, before)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for(lambda: _iteration(run_dir) >= 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"Resume with: rlhf train --resume {run_dir}" in err and "Traceback" not in err
    before = _labels(run_dir)
    out = _resume(run_dir)
    assert out.returncode == 0, out.stderr
    _check_finished(run_dir, before)


def test_resume_refuses_a_missing_run(tmp_path):
    out = _resume(tmp_path / "nope")
    assert out.returncode == 2 and "not a run directory" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("point", ["ask:2", "label:2", "fit:2", "checkpoint:2", "checkpoint:3"])
def test_kill_at_each_failpoint_then_resume(tmp_path, point):
    """SIGKILL exactly while storing clips, writing labels, fitting the reward model and
    writing a checkpoint (RLHF_FAILPOINT, see rlhf/faults.py)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml", *RUN,
         "--run-dir", str(run_dir), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "RLHF_FAILPOINT": point})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    before = _labels(run_dir)
    out = _resume(run_dir)
    assert out.returncode == 0, out.stderr
    _check_finished(run_dir, before)
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the torn write was cleaned up


def test_resume_accepts_only_safe_overrides(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for(lambda: _iteration(run_dir) >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume", str(run_dir),
                          "loop.clip_length=5", "--quiet"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "loop.clip_length: cannot be changed when resuming" in \
        out.stderr
    out = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume", str(run_dir),
                          "eval.episodes=2", "--quiet"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "episodes: 2" in (run_dir / "config.yaml").read_text()  # kept for the next resume


def test_a_robust_run_resumes_with_its_screening_state(tmp_path):
    """reward.robust keeps, between fits, the divergence statistics of the labels it trusted:
    they travel in the checkpoint, and a resumed run goes on screening."""
    run_dir = tmp_path / "run"
    proc = _start(run_dir, "reward.robust=true", "teacher.kind=irrational",
                  "teacher.mistake=0.3")
    _wait_for(lambda: _iteration(run_dir) >= 2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    before = _labels(run_dir)
    states = [json.loads(p.read_text()) for p in sorted(run_dir.glob("checkpoints/*/state.json"))]
    kl = states[-1]["trainer"]["trusted_kl"]
    assert isinstance(kl, list) and len(kl) == 2 and kl[1] > 0  # screened at least once
    out = _resume(run_dir)
    assert out.returncode == 0, out.stderr
    _check_finished(run_dir, before)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert sum(int(r["rm_distrusted"] or 0) + int(r["rm_flipped"] or 0) for r in rows) > 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["reward_model_distrusted"] is not None


# Issue 19's options, all on at once: RIME's screen, SURF's pseudo-labels and crops, diverse
# and policy-aligned queries, per-annotator reliability.
ISSUE_19 = ["reward.robust=true", "reward.pseudo_ratio=1", "reward.pseudo_threshold=0.9",
            "reward.crop_steps=3", "query.strategy=disagreement-kcenter",
            "query.recent_clips=30", "reward.annotator_reliability=true",
            "teacher.kind=irrational", "teacher.mistake=0.2"]


def _option_values(cfg) -> tuple:
    return (cfg.reward.robust, cfg.reward.pseudo_ratio, cfg.reward.pseudo_threshold,
            cfg.reward.crop_steps, cfg.query.strategy, cfg.query.recent_clips,
            cfg.reward.annotator_reliability, cfg.teacher.mistake)


def test_the_robust_and_label_efficient_options_survive_a_kill_and_resume(tmp_path):
    from rlhf.config import load_config

    run_dir = tmp_path / "run"
    proc = _start(run_dir, *ISSUE_19)
    _wait_for(lambda: _iteration(run_dir) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    before = _labels(run_dir)
    out = _resume(run_dir)
    assert out.returncode == 0, out.stderr
    _check_finished(run_dir, before)
    # The run's own config kept every option, so the resumed half trained as the first did.
    assert _option_values(load_config(run_dir / "config.yaml")) == (
        True, 1, 0.9, 3, "disagreement-kcenter", 30, True, 0.2)


def test_the_robust_and_label_efficient_options_are_deterministic_for_a_seed(tmp_path):
    runs = []
    for name in ("a", "b"):
        proc = _start(tmp_path / name, *ISSUE_19)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        rows = list(csv.DictReader((tmp_path / name / "metrics.csv").open()))
        runs.append((_labels(tmp_path / name),
                     [(r["rm_train_loss"], r["rm_val_loss"], r["rm_distrusted"]) for r in rows]))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 40
