"""The reward benchmark runs end to end on a tiny grid and reports every comparison."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One torch thread: two spinning OpenMP threads on a busy 2-core machine made the matmul
# ceilings take minutes (the benchmark itself reports the thread count it ran with).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_reward_benchmark_reports_batched_and_both_references(tmp_path):
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "reward",
                    "--members", "2", "--clip", "5", "--obs", "11", "--hidden", "8",
                    "--batch", "4", "--steps", "1", "--repeats", "1", "--json", str(out)],
                   check=True, capture_output=True, text=True, timeout=300, env=ENV)
    (row,) = json.loads(out.read_text())
    assert (row["members"], row["clip"], row["obs"], row["hidden"]) == (2, 5, 11, 8)
    for key in ("pairs_per_s", "loop_pairs_per_s", "naive_pairs_per_s", "gflops"):
        assert row[key] > 0, key
    # The speedups are the ratios of the rates the row reports, not numbers of their own.
    assert row["speedup_vs_loop"] == pytest.approx(
        row["pairs_per_s"] / row["loop_pairs_per_s"], rel=0.02)
    assert row["speedup_vs_naive"] == pytest.approx(
        row["pairs_per_s"] / row["naive_pairs_per_s"], rel=0.02)


def test_relabel_benchmark_times_each_buffer_size(tmp_path):
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "relabel",
                    "--members", "2", "--hidden", "8", "--layers", "1", "--sizes", "500", "2000",
                    "--repeats", "1", "--json", str(out)],
                   check=True, capture_output=True, text=True, timeout=300, env=ENV)
    rows = json.loads(out.read_text())
    assert [r["transitions"] for r in rows] == [500, 2000]
    for r in rows:
        assert r["seconds"] > 0
        assert r["transitions_per_s"] == pytest.approx(r["transitions"] / r["seconds"], rel=0.02)
