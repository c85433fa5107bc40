"""Who answered what: annotator statistics on scripted answers with known agreement and
consistency, export and import between stores (SQLite and PostgreSQL), and the CLI."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlhf.annotators import annotator_stats, format_table
from rlhf.clips import Clip
from rlhf.exchange import export_labels, import_labels
from rlhf.rundir import RunDir
from rlhf.store import Store, StoreError

ROOT = Path(__file__).resolve().parent.parent


def _clip(ret: float, seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    rewards = np.full(4, ret / 4)
    return Clip(obs=rng.normal(size=(4, 2)).astype(np.float32),
                actions=rng.normal(size=(4, 1)).astype(np.float32), rewards=rewards,
                dones=np.zeros(4, bool), last_obs=np.zeros(2, np.float32), env_step=seed)


def _scripted(location) -> Store:
    """4 clips with true returns 0 < 1 < 2 < 3. alice answers like the true return on
    every pair, and again on two repeats (consistent); bob agrees with her on pairs (0,1)
    and (2,3), is reversed on (0,2), and contradicts himself on a repeat of (2,3); carol
    skips once and ties once."""
    store = Store(location, create=True)
    c = [x.id for x in store.add_clips([_clip(float(r), r) for r in range(4)])]

    def ask(i: int, j: int, who: str, choice: str, rt: float) -> None:
        (q,) = store.add_queries([(c[i], c[j])], 0)
        store.add_label(q.id, choice, "human", response_time=rt, annotator=who)

    for i, j in ((0, 1), (0, 2), (2, 3)):
        ask(i, j, "alice", "b", 2.0)
    ask(1, 0, "alice", "a", 4.0)  # a repeat in the other order: the same verdict
    ask(3, 2, "alice", "a", 6.0)
    ask(0, 1, "bob", "b", 1.0)  # agrees
    ask(0, 2, "bob", "a", 1.0)  # disagrees, and against the true return
    ask(2, 3, "bob", "b", 1.0)  # agrees
    ask(2, 3, "bob", "a", 3.0)  # contradicts himself (and alice, and the true return)
    ask(0, 3, "carol", "skip", 9.0)
    ask(1, 2, "carol", "equal", 5.0)
    return store


def test_statistics_of_scripted_answers(store_at):
    with _scripted(store_at()) as store:
        rows = {r.annotator: r for r in annotator_stats(store.answered())}
    alice, bob, carol = rows["alice"], rows["bob"], rows["carol"]
    assert (alice.labels, alice.skips, alice.ties) == (5, 0, 0)
    assert alice.median_response_s == 2.0 and bob.median_response_s == 1.0
    # alice's verdicts on (0,1) x2 vs bob's one: 2/2; (0,2) 0/1; (2,3) x2 vs bob's two: 2/4.
    assert alice.agreement_n == 7 and alice.agreement == pytest.approx(4 / 7)
    assert alice.self_consistency == 1.0 and alice.self_consistency_n == 2
    assert alice.gold_agreement == 1.0 and alice.gold_n == 5
    assert bob.agreement_n == 7 and bob.agreement == pytest.approx(4 / 7)
    assert bob.self_consistency == 0.0 and bob.self_consistency_n == 1
    assert bob.gold_agreement == pytest.approx(2 / 4)
    assert (carol.labels, carol.skips, carol.ties) == (2, 1, 1)
    assert carol.agreement is None and carol.gold_agreement is None  # nothing to compare
    table = format_table(list(rows.values()))
    assert table.splitlines()[0].split()[:3] == ["annotator", "labels", "skips"]
    assert "alice" in table and "100% (5)" in table


def test_export_then_import_moves_every_answer_once(store_at, tmp_path):
    out = tmp_path / "labels.jsonl"
    with _scripted(store_at("source")) as source:
        assert export_labels(source, out, clips=True) == 11
        before = sorted((a.annotator, a.choice, a.created) for a in source.answered())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["format"] == "rlhf-labels/1" and sum(r["type"] == "clip" for r in lines) == 4
    with Store(store_at("target"), create=True) as target:
        assert import_labels(target, out) == (11, 0)
        assert import_labels(target, out) == (0, 11)  # twice: nothing added
        after = sorted((a.annotator, a.choice, a.created) for a in target.answered())
        assert after == before and target.counts().clips == 4
        stats = {r.annotator: r.agreement for r in annotator_stats(target.answered())}
        assert stats["alice"] == pytest.approx(4 / 7)


def test_parquet_export_is_one_row_per_label_and_imports_where_the_clips_are(tmp_path):
    """Other tools read the table as it is (pyarrow here); into a store that has the clips
    (seeded from a JSONL export with clips) the Parquet file moves every answer once."""
    import pyarrow.parquet as pq

    table, seed = tmp_path / "labels.parquet", tmp_path / "seed.jsonl"
    with _scripted(tmp_path / "s.sqlite") as source:
        assert export_labels(source, table) == 11
        with pytest.raises(StoreError, match="--clips needs a .jsonl file"):
            export_labels(source, tmp_path / "c.parquet", clips=True)
        before = sorted((a.annotator, a.choice, a.created) for a in source.answered())
        assert import_labels(source, table) == (0, 11)  # into its own store: all there
        export_labels(source, seed, clips=True)
    read = pq.read_table(table)
    assert read.num_rows == 11 and read.schema.metadata[b"format"] == b"rlhf-labels/1"
    assert sorted(zip(read["annotator"].to_pylist(), read["choice"].to_pylist(),
                      read["created"].to_pylist(), strict=True)) == before
    with Store(tmp_path / "t.sqlite", create=True) as target:
        with pytest.raises(StoreError, match="neither in the target store"):
            import_labels(target, table)  # no clips there yet, and none in the table
        assert import_labels(target, seed) == (11, 0)
        assert import_labels(target, table) == (0, 11)  # the same answers: none twice
    # Hostile tables: each refused in one line, nothing written.
    import pyarrow as pa

    for column, values, message in (
            ("response_time", ["fast"] * 11, "'response_time' must be a number or null"),
            ("annotator", [["x"]] * 11, "'annotator' must be a string or null"),
            ("created", [float("nan")] * 11, "'created' is not finite"),
            ("type", ["clip"] * 11, "neither in the target store")):
        hostile = tmp_path / f"hostile-{column}.parquet"
        t = read.drop_columns([column]) if column in read.column_names else read
        pq.write_table(t.append_column(column, pa.array(values)).replace_schema_metadata(
            read.schema.metadata), hostile)
        with Store(tmp_path / "empty.sqlite", create=True) as empty, \
                pytest.raises(StoreError, match=message):
            import_labels(empty, hostile)
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(table.read_bytes()[: len(table.read_bytes()) // 2])
    with Store(tmp_path / "t.sqlite") as target, pytest.raises(StoreError,
                                                               match="cannot read it as Parquet"):
        import_labels(target, damaged)


def test_import_refuses_damaged_or_foreign_files_and_writes_nothing(tmp_path):
    out = tmp_path / "labels.jsonl"
    with _scripted(tmp_path / "s.sqlite") as store:
        export_labels(store, out)  # without clips
    with Store(tmp_path / "empty.sqlite", create=True) as empty:
        with pytest.raises(StoreError, match="neither in the target store nor in the file"):
            import_labels(empty, out)
        bad = tmp_path / "bad.jsonl"
        bad.write_text(out.read_text().replace('"choice": "b"', '"choice": "left"', 1))
        with pytest.raises(StoreError, match=r"bad.jsonl:\d+: choice must be"):
            import_labels(empty, bad)
        bad.write_text("not json\n")
        with pytest.raises(StoreError, match="not a JSON line"):
            import_labels(empty, bad)
        bad.write_text('{"type": "label"}\n')
        with pytest.raises(StoreError, match="not an rlhf label export"):
            import_labels(empty, bad)
        assert empty.counts().label_events == 0 and empty.counts().clips == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_annotators_export_import_on_a_postgresql_run(pg_url, tmp_path):
    from rlhf.store_pg import PgLocation

    run = f"cli-{tmp_path.name[-20:].replace('_', '-')}"
    _scripted(PgLocation(pg_url, run)).close()
    shown = _cli("annotators", pg_url, "--run", run)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].startswith("alice")
    as_json = json.loads(_cli("annotators", pg_url, "--run", run, "--json").stdout)
    assert {r["annotator"] for r in as_json} == {"alice", "bob", "carol"}
    out = tmp_path / "x.jsonl"
    assert _cli("export", pg_url, "--run", run, "--out", str(out), "--clips").returncode == 0
    again = _cli("export", pg_url, "--run", run, "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr  # never over a file
    no_run = _cli("annotators", pg_url)
    assert no_run.returncode == 2 and "--run NAME" in no_run.stderr
    assert len(no_run.stderr.strip().splitlines()) == 1
    target = tmp_path / "t.sqlite"
    Store(target, create=True).close()
    missing = _cli("import", str(out), "--into", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not a run directory" in missing.stderr


def test_a_run_on_postgresql_trains_and_its_labels_carry_the_teacher(pg_url, tmp_path):
    """The smoke config with store.url: the store lives on the server, nothing else moves;
    the same run name again is refused before a run directory is made."""
    run_dir = tmp_path / "run"
    done = _cli("train", str(ROOT / "configs" / "smoke.yaml"), f"run_dir={run_dir}",
                f"store.url={pg_url}", "--quiet")
    assert done.returncode == 0, done.stderr
    assert not (run_dir / "store.sqlite").exists()
    status = json.loads(_cli("status", str(run_dir), "--json").stdout)
    assert status["labels"] == 30
    table = _cli("annotators", str(run_dir)).stdout
    assert "simulated" in table.splitlines()[1] or table.splitlines()[1].split()[1] == "30"
    again = _cli("train", str(ROOT / "configs" / "smoke.yaml"), f"run_dir={tmp_path / 'b'}",
                 f"store.url={pg_url}", "store.run=run", "--quiet")
    assert again.returncode == 2 and "already holds another run's" in again.stderr
    assert not (tmp_path / "b").exists()
    unreachable = _cli("train", str(ROOT / "configs" / "smoke.yaml"),
                       f"run_dir={tmp_path / 'c'}", "store.url=postgresql://u@127.0.0.1:9/db",
                       "--quiet")
    assert unreachable.returncode == 2 and "127.0.0.1:9" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_a_robust_crowd_run_reports_the_distrusted_labels_of_each_annotator(tmp_path):
    """reward.robust with several annotators: status.json and ``rlhf status`` say how many
    of each person's labels the last fit left out or flipped, metrics.csv says it for every
    fit, and with reward.annotator_reliability each fit's flip-rate estimates too."""
    run_dir = tmp_path / "run"
    done = _cli("train", str(ROOT / "configs" / "smoke.yaml"), f"run_dir={run_dir}",
                "teacher.kind=crowd", "teacher.crowd_mistakes=[0,0,1]", "reward.robust=true",
                "reward.annotator_reliability=true", "--quiet")
    assert done.returncode == 0, done.stderr
    status = json.loads(_cli("status", str(run_dir), "--json").stdout)
    by = status["reward_model_distrusted_by"]
    assert set(by) == {"sim-0", "sim-1", "sim-2"}
    assert sum(by.values()) == status["reward_model_distrusted"]
    line = _cli("status", str(run_dir)).stdout
    assert f"sim-2 {by['sim-2']}" in line and "labels distrusted by the last fit (" in line
    # metrics.csv has them iteration by iteration: the last row's are the status's.
    rows = RunDir(run_dir).read_metrics()
    assert {k: rows[-1][f"rm_distrusted[{k}]"] for k in by} == by
    assert all(sum(r[f"rm_distrusted[{k}]"] for k in by) == r["rm_distrusted"] + r["rm_flipped"]
               for r in rows if not math.isnan(r.get("rm_distrusted[sim-0]", math.nan)))
    # With annotator_reliability too: each fit's estimated flip rates, the last in status.
    rates = status["annotator_flip_rates"]
    assert set(rates) == set(by) and rates["sim-2"] > max(rates["sim-0"], rates["sim-1"])
    assert {k: rows[-1][f"rm_flip_rate[{k}]"] for k in rates} == rates
