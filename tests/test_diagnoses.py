"""Honest diagnoses: damaged, truncated, read-only or full-disk input gives one line naming the
file, the problem and the fix, and never invites a destructive fix when the data is fine.

Every test damages a copy of one finished smoke run (``shutil.copytree``), never the run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from rlhf.cli import main
from rlhf.io import SaveError
from rlhf.rundir import LATEST, CheckpointError, RunDir
from rlhf.store import Store, StoreError

ROOT = Path(__file__).parent.parent
# The agent normalises observations, so checkpoints hold an obs_rms.npz to damage too.
SMOKE = ["configs/smoke.yaml", "agent.normalize_obs=true"]


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, to damage."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    return copy


def _latest(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / (run_dir / "checkpoints" / LATEST).read_text().strip()


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str, *words: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _no_destructive_advice(line: str) -> None:
    for word in ("corrupt", "restore it", "delete", "remove"):
        assert word not in line, line


# -- 1. read-only ---------------------------------------------------------------------------

def _mounted(source: Path, target: Path, *options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", *options, str(source), str(target)],
                          capture_output=True).returncode == 0


@contextlib.contextmanager
def _read_only_mount(source: Path, target: Path) -> Iterator[Path]:
    """``source`` seen through a read-only bind mount at ``target`` (as root; else skip)."""
    if os.geteuid() != 0 or not _mounted(source, target, "--bind"):
        pytest.skip("needs root to bind-mount a read-only copy")
    try:
        if not _mounted(target, target, "-o", "remount,bind,ro"):
            pytest.skip("mount -o remount,bind,ro is not permitted in this sandbox")
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


def test_read_only_run_is_reported_as_read_only_not_corrupt(run, tmp_path, capsys):
    with Store(run / "store.sqlite") as store:
        counts = store.counts()
    with _read_only_mount(run, tmp_path / "ro") as ro:
        with pytest.raises(StoreError) as caught:  # a writer (the viewer, a trainer)
            Store(ro / "store.sqlite")
        message = str(caught.value)
        assert "read-only" in message and "cannot take new labels" in message
        assert "\n" not in message
        _no_destructive_advice(message)
        # A reader opens it (WAL needs a -shm file the directory cannot hold: immutable).
        with Store(ro / "store.sqlite", readonly=True) as store:
            assert store.counts() == counts
            with pytest.raises(StoreError, match="read-only"):
                store.add_label(1, "a", "t")
        rc, out, err = _cli(capsys, "status", ro)
        if rc == 0:  # `rlhf status` opens the store as a reader
            assert f"{counts.labels}/" in out
        else:
            _no_destructive_advice(_one_line_error(rc, err, "store.sqlite", "read-only"))


def test_read_only_sqlite_connection_is_reported_as_read_only(run):
    """No mount needed: SQLite opened read-only (a URI, ``mode=ro``) refuses a write with
    its own 'attempt to write a readonly database'."""
    with Store(run / "store.sqlite", readonly=True) as store:
        labels = store.counts().labels
        with pytest.raises(StoreError) as caught:
            store.add_label(1, "a", "t")
        assert "read-only" in str(caught.value)
        _no_destructive_advice(str(caught.value))
    with Store(run / "store.sqlite") as store:
        assert store.counts().labels == labels


# -- 2. a truncated or damaged store ----------------------------------------------------------

def _truncate(size: Callable[[int], int]) -> Callable[[Path], None]:
    return lambda p: os.truncate(p, size(p.stat().st_size))


def _zero_pages(p: Path) -> None:
    with open(p, "r+b") as f:
        f.seek(4096 * 5)
        f.write(b"\0" * 4096 * 4)


@pytest.mark.parametrize("damage", [_truncate(lambda n: n // 2), _truncate(lambda n: 100),
                                    _truncate(lambda n: 4096), _zero_pages],
                         ids=["half", "100-bytes", "one-page", "zeroed-pages"])
def test_truncated_store_is_corrupt_not_intact(run, capsys, damage):
    damage(run / "store.sqlite")
    rc, _, err = _cli(capsys, "status", run)
    line = _one_line_error(rc, err, "store.sqlite", "corrupt", "restore it from a copy")
    assert "intact" not in line and "disk is full" not in line


def test_zero_byte_store_is_reported_empty(run, capsys):
    os.truncate(run / "store.sqlite", 0)
    rc, _, err = _cli(capsys, "status", run)
    line = _one_line_error(rc, err, "store.sqlite", "empty (0 bytes)")
    assert "intact" not in line


def test_store_damaged_after_it_was_opened_is_one_line(run):
    store = Store(run / "store.sqlite")
    try:
        os.truncate(run / "store.sqlite", 8192)
        for query in (store.counts, store.labels, store.pending_queries):
            with pytest.raises(StoreError, match="corrupt") as caught:
                query()
            assert "\n" not in str(caught.value) and "intact" not in str(caught.value)
    finally:
        store.close()


def test_damaged_clip_data_is_one_line(run):
    db = sqlite3.connect(run / "store.sqlite")
    db.execute("UPDATE clips SET data = X'504b0304deadbeef' WHERE id = 2")
    db.commit()
    db.close()
    with Store(run / "store.sqlite") as store, \
            pytest.raises(StoreError, match="clip 2 is damaged"):
        store.get_clips([1, 2])


# -- 3. damaged checkpoint files ----------------------------------------------------------------

def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / "checkpoints" / name).write_bytes(data)


def _link_out(run_dir: Path) -> None:
    """A checkpoint directory that is a link to a complete checkpoint outside the run."""
    shutil.copytree(_latest(run_dir), run_dir.parent / "outside")
    (run_dir / "checkpoints" / "it-99999-0000000000").symlink_to(run_dir.parent / "outside")
    (run_dir / "checkpoints" / LATEST).write_text("it-99999-0000000000\n")


def _latest_links_out(run_dir: Path) -> None:
    (run_dir.parent / "elsewhere").write_text(_latest(run_dir).name + "\n")
    (run_dir / "checkpoints" / LATEST).unlink()
    (run_dir / "checkpoints" / LATEST).symlink_to(run_dir.parent / "elsewhere")


@pytest.mark.parametrize("damage, words", [
    (_write(LATEST, bytes(range(256))), ["binary"]),
    (_write(LATEST, b"\xff\xfe\x00it"), ["binary"]),
    (_write(LATEST, b""), ["empty"]),
    (_write(LATEST, b"\n  \n"), ["empty"]),
    (_write(LATEST, b"../../etc\n"), ["refused"]),
    (_write(LATEST, b"/etc\n"), ["refused"]),
    (_write(LATEST, b"it-00002-0000001024\nit-00001\n"), ["refused"]),
    (_link_out, ["outside", "refused"]),
    (_latest_links_out, ["outside", "refused"]),
], ids=["binary", "not-utf8", "empty", "blank", "dotdot", "absolute", "two-lines",
        "symlink-out", "pointer-symlink-out"])
def test_damaged_latest_pointer_is_named(run, capsys, damage, words):
    damage(run)
    for command in (["status", run], ["eval", run, "--episodes", "1"]):
        rc, _, err = _cli(capsys, *command)
        line = _one_line_error(rc, err, "LATEST", *words)
        assert "it-00002-0000001024" in line  # the way out: the newest complete checkpoint


def _edit_state(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        state = json.loads(path.read_text())
        result = edit(state)
        path.write_text(json.dumps(state if result is None else result))
    return damage


@pytest.mark.parametrize("damage", [
    _edit_state(lambda s: []), _edit_state(lambda s: 3), _edit_state(lambda s: "x"),
    _edit_state(lambda s: s.update(iteration="2")),
    _edit_state(lambda s: s.update(timesteps=-1)),
    _edit_state(lambda s: s.update(rng_states=[1, 2])),
    _edit_state(lambda s: s["rng_states"]["query"].update(state=5)),
    _edit_state(lambda s: s.pop("trainer")),
    _edit_state(lambda s: s["trainer"].update(fits="3")),
    _edit_state(lambda s: s["trainer"].update(trusted_kl=[0.5, -1])),
    _edit_state(lambda s: s["trainer"].update(fitted_labels=-3)),
    lambda p: os.truncate(p, p.stat().st_size // 2),
    lambda p: p.write_bytes(b"\xff\xfe{}"),
], ids=["list", "int", "string", "iteration-string", "negative-timesteps", "rng-list",
        "rng-state-bad", "no-trainer", "fits-string", "trusted-kl-negative", "fitted-negative",
        "truncated",
        "binary"])
def test_damaged_state_json_is_named(run, capsys, damage):
    damage(_latest(run) / "state.json")
    rc, _, err = _cli(capsys, "train", "--resume", run, "--quiet")
    line = _one_line_error(rc, err, "state.json", "corrupt")
    assert "it-00001-0000000512" in line  # the way out: the previous checkpoint


def _edit_tensors(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        tensors = load_file(str(path))
        edit(tensors)
        save_file(tensors, str(path))
    return damage


def _set(key: str, value: Callable[[torch.Tensor], torch.Tensor]
         ) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = value(tensors[key]).contiguous()
    return edit


def _poison(x: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def value(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[0] = x
        return t
    return value


@pytest.mark.parametrize("file, damage, words", [
    ("reward_model.safetensors", _edit_tensors(lambda t: t.pop("feat_std")), ["'feat_std'"]),
    ("reward_model.safetensors", _edit_tensors(lambda t: t.update(x=torch.zeros(2))), ["'x'"]),
    ("reward_model.safetensors", _edit_tensors(_set("net.weights.0", torch.Tensor.half)),
     ["float16"]),
    ("reward_model.safetensors", _edit_tensors(_set("fitted", lambda t: t.to(torch.int64))),
     ["int64"]),
    ("reward_model.safetensors", _edit_tensors(_set("net.weights.1", _poison(float("nan")))),
     ["NaN"]),
    ("reward_model.safetensors", _edit_tensors(_set("out_std", _poison(float("inf")))),
     ["NaN or infinite"]),
    ("reward_model.safetensors", lambda p: os.truncate(p, 3000), ["corrupt"]),
    ("trainer.safetensors", _edit_tensors(lambda t: t.pop("adam.1.exp_avg")),
     ["'adam.1.exp_avg'"]),
    ("trainer.safetensors", _edit_tensors(lambda t: t.update(bogus=torch.zeros(2))),
     ["'bogus'"]),
    ("trainer.safetensors", _edit_tensors(_set("rng.torch", lambda t: t.to(torch.int64))),
     ["'rng.torch'", "uint8"]),
    ("trainer.safetensors", _edit_tensors(_set("adam.0.exp_avg", torch.Tensor.half)),
     ["float16"]),
    ("trainer.safetensors", _edit_tensors(_set("adam.2.exp_avg_sq",
                                               lambda t: t.reshape(-1)[1:])), ["expected"]),
    ("trainer.safetensors", _edit_tensors(_set("adam.2.exp_avg_sq", _poison(float("nan")))),
     ["NaN"]),
    ("trainer.safetensors", lambda p: os.truncate(p, 3000), ["corrupt"]),
], ids=["rm-missing", "rm-extra", "rm-float16", "rm-int-flag", "rm-nan", "rm-inf",
        "rm-truncated", "tr-missing", "tr-extra", "tr-rng-int", "tr-float16", "tr-shape",
        "tr-nan", "tr-truncated"])
def test_damaged_safetensors_are_named(run, capsys, file, damage, words):
    damage(_latest(run) / file)
    rc, _, err = _cli(capsys, "train", "--resume", run, "--quiet")
    _one_line_error(rc, err, file, *words)


def _npz(**arrays: np.ndarray) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with np.load(path) as d:
            saved = {k: d[k] for k in d.files}
        saved.update(arrays)
        buf = io.BytesIO()
        np.savez(buf, **saved)
        path.write_bytes(buf.getvalue())
    return damage


@pytest.mark.parametrize("damage, words", [
    (_npz(mean=np.zeros(5)), ["(5,)"]),
    (_npz(var=np.full(3, np.nan)), ["NaN"]),
    (_npz(var=-np.ones(3)), ["negative"]),
    (lambda p: p.write_bytes(b"PK\x03\x04garbage"), ["corrupt"]),
], ids=["wrong-shape", "nan", "negative-var", "garbage"])
def test_damaged_obs_rms_is_named(run, capsys, damage, words):
    damage(_latest(run) / "obs_rms.npz")
    rc, _, err = _cli(capsys, "eval", run, "--episodes", "1")
    _one_line_error(rc, err, "obs_rms.npz", *words)


def _nan_policy(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    weights = torch.load(io.BytesIO(entries["policy.pth"]), weights_only=True)
    first = next(iter(weights))
    weights[first] = torch.full_like(weights[first], float("nan"))
    buf = io.BytesIO()
    torch.save(weights, buf)
    entries["policy.pth"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.unlink(), ["missing"]),
    (lambda p: (p.unlink(), p.mkdir()), ["not a file"]),
    (lambda p: os.truncate(p, p.stat().st_size // 2), ["not a policy"]),
    (lambda p: p.write_bytes(os.urandom(4096)), ["not a policy"]),
    (_nan_policy, ["NaN"]),
], ids=["missing", "directory", "truncated", "random", "nan"])
def test_damaged_policy_is_named(run, capsys, damage, words):
    damage(_latest(run) / "policy.zip")
    rc, _, err = _cli(capsys, "eval", run, "--episodes", "1")
    _one_line_error(rc, err, "policy.zip", *words)


# status.json and metrics.csv are derived data: a damaged one is reported (one line) and
# ignored, never a reason to stop; `rlhf status` still reports the store's counts.

@pytest.mark.parametrize("damage, words", [
    (lambda p: os.truncate(p, p.stat().st_size // 2), ["invalid JSON"]),
    (lambda p: p.write_text("[]"), ["not an object"]),
    (lambda p: p.write_bytes(b"\xff\xfe\x00"), ["not UTF-8"]),
    (lambda p: p.write_text('{"latest_eval_return": "high", "timesteps": 7}'),
     ["'latest_eval_return'"]),
    (lambda p: p.write_text('{"reward_model_distrusted_by": {"bob": "many"}, "timesteps": 7}'),
     ["'reward_model_distrusted_by'"]),
    (lambda p: p.write_text('{"annotator_flip_rates": [0.1], "timesteps": 7}'),
     ["'annotator_flip_rates'"]),
], ids=["truncated", "list", "binary", "wrong-type", "per-annotator-value", "per-annotator-list"])
def test_damaged_status_json_is_reported_and_ignored(run, capsys, damage, words):
    with Store(run / "store.sqlite") as store:
        labels = store.counts().labels
    damage(run / "status.json")
    rc, out, err = _cli(capsys, "status", run)
    assert rc == 0 and f"{labels}/" in out and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "status.json" in lines[0] and "ignored" in lines[0]
    for word in words:
        assert word in lines[0]


def test_damaged_metrics_rows_are_left_out_with_one_warning(run, capsys):
    metrics = run / "metrics.csv"
    intact = RunDir(run).read_metrics()
    with open(metrics, "ab") as f:
        f.write(b"3,1536,9\n")  # ragged: a row cut short
        f.write(b"4,\xff\xfe\x00\x01," * 6 + b"\n")  # binary bytes
        f.write(b"x" + b",1" * (len(intact[0]) - 1) + b"\n")  # no iteration number
    capsys.readouterr()
    assert repr(RunDir(run).read_metrics()) == repr(intact)  # NaN != NaN
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.csv" in err[0] and "3 damaged rows" in err[0]


def test_binary_metrics_file_is_ignored_with_one_warning(run, capsys):
    (run / "metrics.csv").write_bytes(os.urandom(2000))
    capsys.readouterr()
    assert RunDir(run).read_metrics() == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.csv is damaged" in err[0]


# -- 4. a full disk while saving ------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as a full disk")
    if not _mounted(Path("tmpfs"), disk, "-t", "tmpfs", "-o", "size=4m"):
        pytest.skip("mount -t tmpfs is not permitted in this sandbox")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def _fill(disk: Path) -> None:
    """Write to ``disk`` until the file system refuses (ENOSPC)."""
    with contextlib.suppress(OSError), open(disk / "filler", "ab") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with contextlib.suppress(OSError), open(disk / "filler2", "ab") as f:
        while True:
            f.write(b"\0" * 512)
            f.flush()


def _agent_and_trainer():
    from rlhf.agent import make_agent, make_env_stack
    from rlhf.agents import OnPolicyAgent
    from rlhf.config import load_config
    from rlhf.reward.model import FeatureSpec, RewardModel
    from rlhf.reward.trainer import RewardTrainer

    cfg = load_config(ROOT / SMOKE[0], SMOKE[1:])
    envs = make_env_stack(cfg)
    agent = OnPolicyAgent(make_agent(cfg.agent, envs.agent_env, cfg.seed,
                                     total_timesteps=cfg.loop.total_timesteps), envs)
    spec = FeatureSpec.from_spaces(envs.venv.observation_space, envs.venv.action_space)
    model = RewardModel(spec, cfg.reward.ensemble, cfg.reward.hidden, seed=cfg.seed)
    return envs, agent, RewardTrainer(model, cfg.reward, cfg.loop.clip_length, seed=cfg.seed)


def _fill_first(disk: Path, real: Callable) -> Callable:
    def fill_then_save(*args, **kwargs):
        _fill(disk)
        return real(*args, **kwargs)
    return fill_then_save


@pytest.mark.parametrize("where", ["reward_model", "trainer", "policy"])
def test_full_disk_while_saving_a_checkpoint_says_so(small_disk, monkeypatch, where):
    """The real library (safetensors, torch, zipfile) hits a real ENOSPC: the message says
    the disk is full and that the previous checkpoint (which LATEST names) is intact."""
    import rlhf.checkpoint as checkpoint
    import rlhf.reward.model as reward_model

    envs, agent, trainer = _agent_and_trainer()
    try:
        checkpoints = small_disk / "checkpoints"
        rngs = {"query": np.random.default_rng(0)}
        first = checkpoint.save(checkpoints, 0, agent, trainer, rngs)
        files = {p.name: p.read_bytes() for p in first.iterdir()}
        if where == "reward_model":
            monkeypatch.setattr(reward_model, "save_file", _fill_first(small_disk,
                                                                      reward_model.save_file))
        elif where == "trainer":
            monkeypatch.setattr(checkpoint, "save_file", _fill_first(small_disk,
                                                                    checkpoint.save_file))
        else:
            monkeypatch.setattr(agent.sb3, "save", _fill_first(small_disk, agent.sb3.save))
        agent.sb3.num_timesteps += 512
        with pytest.raises(SaveError) as caught:
            checkpoint.save(checkpoints, 1, agent, trainer, rngs)
        message = str(caught.value)
        assert "the disk is full" in message and "previous checkpoint is intact" in message
        assert "\n" not in message
        assert (checkpoints / LATEST).read_text().strip() == first.name
        assert {p.name: p.read_bytes() for p in first.iterdir()} == files
        assert not list(checkpoints.glob(".tmp-*"))  # the torn write was cleaned up
        assert [p.name for p in checkpoints.glob("it-*")] == [first.name]
    finally:
        envs.close()


def test_full_disk_while_saving_the_reward_model_keeps_its_previous_version(small_disk):
    from rlhf.reward.model import WEIGHTS

    _, _, trainer = _agent_and_trainer()
    trainer.model.save(small_disk)
    before = (small_disk / WEIGHTS).read_bytes()
    _fill(small_disk)
    with pytest.raises(SaveError, match="the disk is full; its previous version is intact"):
        trainer.model.save(small_disk)
    assert (small_disk / WEIGHTS).read_bytes() == before
    assert not list(small_disk.glob(f".{WEIGHTS}.*"))


def test_a_bug_while_saving_is_not_called_a_full_disk(tmp_path):
    """Only the disk's failures become SaveErrors: anything else keeps its traceback."""
    from rlhf.io import atomic_save

    def broken(path: Path) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        atomic_save(tmp_path / "x", broken)
    assert list(tmp_path.iterdir()) == []


def test_load_errors_are_checkpoint_errors(run):
    """The API raises the CLI's user errors (exit 2), not library exceptions."""
    from rlhf.checkpoint import load_state

    (_latest(run) / "state.json").write_text("[]")
    with pytest.raises(CheckpointError, match="not an object"):
        load_state(_latest(run))
