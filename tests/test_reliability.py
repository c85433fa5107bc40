"""Reliability: malformed input gives clear errors and never a corrupt store; files from
someone else cannot run code; a full disk leaves the previous checkpoint intact."""

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import cloudpickle
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf.config import Config, ConfigError, load_config
from rlhf.store import Store, StoreError

ROOT = Path(__file__).parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


# -- config: any malformed input is a ConfigError naming the key --------------------------

KEYS = ["seed", "name", "env.id", "env.n_envs", "reward.ensemble", "reward.lr", "reward.hidden",
        "teacher.beta", "teacher.kind", "loop.total_labels", "loop.clip_length", "query.strategy",
        "eval.episodes", "agent.normalize_obs", "reward", "nonsense", "reward.nonsense", ""]
VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                   st.text(max_size=8), st.none(), st.lists(st.integers(-3, 300), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4))
def test_config_overrides_never_crash(items):
    overrides = [f"{k}={json.dumps(v)}" for k, v in items]
    try:
        load_config(overrides=overrides)
    except ConfigError as e:
        message = str(e)
        assert message and "\n" not in message


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_config_files_never_crash(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        cfg = load_config(path)
    except ConfigError as e:  # refused: one line that says what is wrong
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(cfg, Config)  # accepted: a whole config, the defaults filled in
    assert cfg.loop.total_labels >= 1 and cfg.reward.ensemble >= 1


# -- store: random and malformed calls never corrupt it ----------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["label", "retract", "query"]),
                         st.integers(-2, 12), st.sampled_from(["a", "b", "equal", "skip",
                                                               "left", "", "retract"])),
               max_size=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_store_api_with_malformed_calls(tmp_path_factory, ops):
    import numpy as np

    from tests.test_store import _clip  # a real clip

    path = tmp_path_factory.mktemp("s") / "s.sqlite"
    store = Store(path, create=True)
    clips = store.add_clips([_clip(np.random.default_rng(i)) for i in range(3)])
    store.add_queries([(clips[0].id, clips[1].id), (clips[1].id, clips[2].id)], 0)
    ok = 0
    for op, n, choice in ops:
        try:
            if op == "label":
                store.add_label(n, choice, "t")
            elif op == "retract":
                store.retract(n, "t")
            else:
                store.add_queries([(clips[n % 3].id, clips[(n + 1) % 3].id)], 1)
                continue
            ok += 1
        except StoreError:
            pass
    counts = store.counts()
    assert counts.label_events == ok
    assert 0 <= counts.labels <= counts.queries and counts.pending >= 0
    pairs, mu = store.preferences()
    assert len(pairs) == len(mu) and set(mu.tolist()) <= {0.0, 0.5, 1.0}
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- shared files cannot run code on load ---------------------------------------------------

class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    out = _cli("train", "configs/smoke.yaml", "--run-dir", str(run_dir), "--quiet")
    assert out.returncode == 0, out.stderr
    return run_dir


def _latest(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / (run_dir / "checkpoints/LATEST").read_text().strip()


def _rewrite_zip(path: Path, replace: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    entries.update(replace)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)


def test_crafted_policy_does_not_run_code(smoke_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    policy = _latest(run_dir) / "policy.zip"
    marker = tmp_path / "pwned"

    # 1. a pickled payload in the zip's data entry (SB3's full load would unpickle it)
    with zipfile.ZipFile(policy) as z:
        data = json.loads(z.read("data"))
    payload = base64.b64encode(cloudpickle.dumps(_Evil(marker))).decode()
    data["observation_space"] = {":type:": "<class 'x'>", ":serialized:": payload}
    _rewrite_zip(policy, {"data": json.dumps(data).encode()})
    out = _cli("eval", str(run_dir), "--episodes", "1")
    assert out.returncode == 0, out.stderr  # parameters only: the data entry is never read
    assert not marker.exists()

    # 2. a pickled payload in the weights themselves
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Evil(marker)}, evil)
    _rewrite_zip(policy, {"policy.pth": evil.read_bytes()})
    out = _cli("eval", str(run_dir), "--episodes", "1")
    assert out.returncode == 2 and "not a policy this config can load" in out.stderr
    assert "Traceback" not in out.stderr
    assert not marker.exists()


def test_crafted_reward_model_does_not_run_code(smoke_run, tmp_path):
    from rlhf.reward.model import RewardModel, RewardModelError

    ck = tmp_path / "ck"
    shutil.copytree(_latest(smoke_run), ck)
    marker = tmp_path / "pwned"
    torch.save({"x": _Evil(marker)}, ck / "reward_model.safetensors")
    with pytest.raises(RewardModelError, match="corrupt"):
        RewardModel.load(ck)
    assert not marker.exists()


def test_corrupt_store_is_reported_not_half_read(smoke_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    db = run_dir / "store.sqlite"
    raw = bytearray(db.read_bytes())
    raw[:100] = b"\0" * 100  # wipe the header
    db.write_bytes(bytes(raw))
    out = _cli("status", str(run_dir))
    assert out.returncode == 2 and "store.sqlite" in out.stderr and "Traceback" not in out.stderr


# -- a full disk ------------------------------------------------------------------------------

def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs as a full disk")
def test_full_disk_while_saving_keeps_the_previous_checkpoint(smoke_run, tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "8m"):
        pytest.skip("mount -t tmpfs is not permitted in this sandbox")
    try:
        run_dir = disk / "run"  # a run killed after its first iterations, on the small disk
        killed = subprocess.run(
            [sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml",
             "loop.total_timesteps=2048", "loop.iterations=4", "loop.total_labels=40",
             "eval.every=0", "eval.episodes=1", "--run-dir", str(run_dir), "--quiet"],
            cwd=ROOT, capture_output=True, timeout=300,
            env={**os.environ, "RLHF_FAILPOINT": "fit:3"})
        assert killed.returncode == -9
        latest_before = _latest(run_dir)
        with Store(run_dir / "store.sqlite") as store:
            labels_before = store.counts().labels
        # Fill the disk, then ask the run for more: its next write must fail cleanly.
        subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=64k"],
                       capture_output=True)
        out = _cli("train", "--resume", str(run_dir), "--quiet")
        assert out.returncode == 2, out.stderr
        assert "disk is full" in out.stderr or "full" in out.stderr
        assert "Traceback" not in out.stderr
        assert _latest(run_dir) == latest_before  # the pointer still names a whole checkpoint
        # Space again: nothing was lost, and the run resumes and finishes.
        (disk / "filler").unlink()
        with Store(run_dir / "store.sqlite") as store:
            assert store.counts().labels >= labels_before
        out = _cli("train", "--resume", str(run_dir), "--quiet")
        assert out.returncode == 0, out.stderr
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
