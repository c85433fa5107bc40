"""The trainer when its PostgreSQL server goes away mid-run (a real cluster, stopped hard):
it retries for ``store.retry_seconds`` and carries on once the server is back; past that,
it saves a checkpoint and stops in one line, and ``rlhf train --resume`` finishes the run
with every label there. The store's own retry policy is tested here too."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import throwaway_cluster
from pg import Cluster

from rlhf.clips import Clip
from rlhf.store import Store, StoreUnavailable
from rlhf.store_errors import RetryPolicy
from rlhf.store_pg import PgLocation

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster():
    """A cluster of this module's own (not RLHF_TEST_PG_URL's server): the tests stop it."""
    c = throwaway_cluster()
    yield c
    c.close()


def _train(cluster: Cluster, run_dir: Path, *extra: str) -> subprocess.Popen:
    # Long enough (8 iterations of 1k steps) that the server is stopped while it trains.
    return subprocess.Popen(
        [sys.executable, "-m", "rlhf.cli", "train", str(ROOT / "configs" / "smoke.yaml"),
         f"run_dir={run_dir}", f"store.url={cluster.url}", "loop.total_timesteps=8192",
         "loop.iterations=8", "--quiet", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_first_checkpoint(run_dir: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.1)


def _status(run_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "rlhf.cli", "status", str(run_dir), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_trainer_waits_for_a_restarted_server_and_carries_on(cluster, tmp_path):
    run_dir = tmp_path / "rides-out"
    proc = _train(cluster, run_dir, "store.retry_seconds=120")
    _wait_for_first_checkpoint(run_dir, proc)
    cluster.stop("immediate")
    time.sleep(3)  # the trainer needs the store at least once an iteration
    cluster.start()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "retrying for up to 120 s" in out and "the store is back after" in out
    status = _status(run_dir)
    assert status["labels"] == 30 and status["pending"] == 0 and status["timesteps"] == 8192


def test_past_retry_seconds_it_checkpoints_stops_in_one_line_and_resumes(cluster, tmp_path):
    run_dir = tmp_path / "gives-up"
    proc = _train(cluster, run_dir, "store.retry_seconds=2")
    _wait_for_first_checkpoint(run_dir, proc)
    cluster.stop("immediate")
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        cluster.start()
    assert proc.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert "gave up after" in line and f"rlhf train --resume {run_dir}" in line
    resumed = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume",
                              str(run_dir), "--quiet"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    status = _status(run_dir)
    assert status["labels"] == 30 and status["pending"] == 0 and status["timesteps"] == 8192


def test_a_store_with_a_retry_policy_rides_out_a_restart_and_gives_up_in_time(cluster):
    location = PgLocation(cluster.url, f"policy-{time.time_ns()}")
    store = Store(location, create=True)
    rng = np.random.default_rng(0)
    clips = store.add_clips([Clip(obs=rng.normal(size=(3, 2)), actions=rng.normal(size=(3, 1)),
                                  rewards=rng.normal(size=3), dones=np.zeros(3, bool),
                                  last_obs=rng.normal(size=2)) for _ in range(2)])
    q1, q2 = store.add_queries([(clips[0].id, clips[1].id)] * 2, 0)
    lines: list[str] = []
    store.retry = RetryPolicy(60, lines.append)
    cluster.stop("immediate")
    threading.Timer(2.0, cluster.start).start()
    label = store.add_label(q1.id, "a", "sim")  # waits for the server, then commits
    assert [lab.id for lab in store.labels()] == [label]
    assert "retrying for up to 60 s" in lines[0] and "back after" in lines[1]
    store.retry = RetryPolicy(1.5, lines.append)
    cluster.stop("immediate")
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="gave up after 1 s of retrying"):
            store.add_label(q2.id, "b", "sim")
        assert time.monotonic() - t0 < 10
    finally:
        cluster.start()
    assert store.counts().labels == 1  # nothing half-written; the store carries on
    store.close()


def test_a_commit_whose_answer_is_lost_is_not_written_twice(cluster, monkeypatch):
    """The server commits, then the connection drops before the client hears it: the store
    asks the server whether the transaction committed instead of doing it again."""
    import psycopg

    store = Store(PgLocation(cluster.url, f"ack-{time.time_ns()}"), create=True)
    store.retry = RetryPolicy(30, lambda line: None)
    rng = np.random.default_rng(1)
    a, b = store.add_clips([Clip(obs=rng.normal(size=(3, 2)), actions=rng.normal(size=(3, 1)),
                                 rewards=rng.normal(size=3), dones=np.zeros(3, bool),
                                 last_obs=rng.normal(size=2)) for _ in range(2)])
    commit = psycopg.Transaction.__exit__
    armed = [True]

    def commit_then_lose_the_answer(self, exc_type, exc, tb):
        out = commit(self, exc_type, exc, tb)
        if exc_type is None and armed[0]:
            armed[0] = False
            self._conn.close()  # as a dropped connection would leave it
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return out

    monkeypatch.setattr(psycopg.Transaction, "__exit__", commit_then_lose_the_answer)
    (q,) = store.add_queries([(a.id, b.id)], 0)
    monkeypatch.undo()
    assert not armed[0] and [x.id for x in store.queries()] == [q.id]  # once, not twice
    store.close()


def test_only_a_server_going_away_is_worth_retrying():
    import psycopg

    from rlhf.store_pg import store_error

    location = PgLocation("postgresql://u@h/db", "r")
    assert isinstance(store_error(location, psycopg.OperationalError("gone"), "write"),
                      StoreUnavailable)
    full = store_error(location, psycopg.errors.DiskFull("could not extend file"), "write")
    assert not isinstance(full, StoreUnavailable) and "disk is full" in str(full)
