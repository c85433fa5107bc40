"""The store's promises, on both backends (``store_at``: an SQLite file, a PostgreSQL run):
clips round-trip, labels are append-only, claims hand a query to one viewer, errors are one
line. SQLite's file-level checks and each backend's schema migration follow."""

import sqlite3
import threading
import time

import numpy as np
import pytest

from rlhf.clips import Clip
from rlhf.store import SCHEMA_VERSION, Store, StoreCounts, StoreError
from rlhf.store_pg import PgLocation


def _clip(rng, t=5, with_states=True) -> Clip:
    return Clip(obs=rng.normal(size=(t, 3)).astype(np.float32),
                actions=rng.normal(size=(t, 2)).astype(np.float32),
                rewards=rng.normal(size=t), dones=np.arange(t) == t - 1,
                last_obs=rng.normal(size=3).astype(np.float32),
                states=rng.normal(size=(t, 4)) if with_states else None, env_step=123)


def test_clips_round_trip_exactly(store_at):
    rng = np.random.default_rng(0)
    clips = [_clip(rng), _clip(rng, with_states=False)]
    with Store(store_at(), create=True) as store:
        stored = store.add_clips(clips)
    with Store(store_at()) as store:  # reopened: really stored
        back = store.get_clips([stored[1].id, stored[0].id])
    for orig, got in zip(clips, [back[1], back[0]], strict=True):
        for name in ("obs", "actions", "rewards", "dones", "last_obs"):
            a, b = getattr(orig, name), getattr(got, name)
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert (orig.states is None) == (got.states is None)
        if orig.states is not None:
            assert np.array_equal(orig.states, got.states)
        assert got.env_step == 123


def test_labels_are_append_only_with_undo(store_at):
    rng = np.random.default_rng(0)
    store = Store(store_at(), create=True)
    c = store.add_clips([_clip(rng) for _ in range(4)])
    q = store.add_queries([(c[0].id, c[1].id), (c[2].id, c[3].id), (c[0].id, c[3].id)], 0)
    assert [x.id for x in store.pending_queries()] == [q[0].id, q[1].id, q[2].id]
    first = store.add_label(q[0].id, "a", "alice", shown_swapped=True, response_time=1.5)
    store.add_label(q[1].id, "equal", "alice")
    store.add_label(q[2].id, "skip", "alice")
    pairs, mu = store.preferences()
    assert pairs.tolist() == [[c[0].id, c[1].id], [c[2].id, c[3].id]]  # skip not trained on
    assert mu.tolist() == [1.0, 0.5]
    store.retract(first, "alice")
    assert [x.id for x in store.pending_queries()] == [q[0].id]
    store.add_label(q[0].id, "b", "alice")
    pairs, mu = store.preferences()
    assert mu.tolist() == [0.5, 0.0]
    counts = store.counts()
    assert counts.labels == 3 and counts.pending == 0 and counts.skipped == 1
    assert counts.label_events == 5  # nothing was deleted
    label = store.labels()[0]
    assert label.query_id == q[1].id and label.choice == "equal"
    assert label.annotator == "alice"  # the teacher's name where no annotator is given
    store.close()


def test_label_errors(store_at):
    store = Store(store_at(), create=True)
    with pytest.raises(StoreError, match="cannot label query 99: no such query"):
        store.add_label(99, "a", "bob")
    c = store.add_clips([_clip(np.random.default_rng(1)) for _ in range(2)])
    (q,) = store.add_queries([(c[0].id, c[1].id)], 0)
    with pytest.raises(StoreError, match="label choice must be one of"):
        store.add_label(q.id, "left", "bob")
    with pytest.raises(StoreError, match="cannot retract label 7"):
        store.retract(7, "bob")
    assert store.counts().label_events == 0
    store.close()


def test_refuses_missing_foreign_newer_and_corrupt_files(tmp_path):
    with pytest.raises(StoreError, match="no store here"):
        Store(tmp_path / "none.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.commit()
    with pytest.raises(StoreError, match="not an rlhf store"):
        Store(other)
    newer = tmp_path / "newer.sqlite"
    Store(newer, create=True).close()
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is not one.*upgrade rlhf"):
        Store(newer)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="corrupt"):
        Store(garbage)


def _as_written_before_user_version(path, version="1"):
    """The store as rlhf wrote it before the schema version moved to PRAGMA user_version:
    a ``meta`` table holding ``schema_version``, user_version 0."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 0")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (version,))
    db.commit()
    db.close()


def test_schema_version_is_user_version_and_old_stores_are_migrated(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path, create=True) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() \
            is None
        c = store.add_clips([_clip(np.random.default_rng(0)) for _ in range(2)])
        (q,) = store.add_queries([(c[0].id, c[1].id)], 0)
        store.add_label(q.id, "a", "alice")
        counts = store.counts()
    _as_written_before_user_version(path)
    with Store(path, readonly=True) as store:  # a reader opens it and changes nothing
        assert store.counts() == counts
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 0
    with Store(path) as store:  # a writer moves the version to user_version
        assert store.counts() == counts and store.labels()[0].choice == "a"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # The old marker stays, so an older rlhf on another labeller's machine still opens it.
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    db.close()
    Store(path).close()  # and opens again as a current store
    for version, shown in (("99", "99"), ("x", "'x'")):
        old = tmp_path / f"old-{version}.sqlite"
        Store(old, create=True).close()
        _as_written_before_user_version(old, version)
        with pytest.raises(StoreError, match=f"schema version {shown} is not one.*upgrade rlhf"):
            Store(old)


def test_counts_is_a_typed_record_with_the_json_keys(store_at):
    with Store(store_at(), create=True) as store:
        counts = store.counts()
    assert isinstance(counts, StoreCounts)
    assert counts.as_dict() == {"clips": 0, "queries": 0, "labels": 0, "skipped": 0,
                                "pending": 0, "awaited": 0, "label_events": 0}
    assert list(counts.as_dict()) == ["clips", "queries", "labels", "skipped", "pending",
                                      "awaited", "label_events"]


def test_asked_pairs_over_a_pool_larger_than_sqlites_variable_limit(tmp_path):
    rng = np.random.default_rng(0)
    with Store(tmp_path / "s.sqlite", create=True) as store:
        # This SQLite allows many bound variables; builds with the default limit allow
        # 32,766 (999 before 3.32). Lowered here, a 2,000-clip pool is past it.
        store.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        ids = [c.id for c in store.add_clips([_clip(rng, t=2, with_states=False)] * 2000)]
        pairs = [(ids[0], ids[1]), (ids[-2], ids[-1]), (ids[5], ids[-1])]
        store.add_queries(pairs, 0)
        assert sorted(store.asked_pairs(ids)) == sorted(pairs)
        assert store.asked_pairs(ids[:2]) == [(ids[0], ids[1])]  # only pairs among the ids
        assert store.clip_ids() == ids


def test_asked_pairs_over_a_large_pool_on_postgresql(pg_url):
    rng = np.random.default_rng(0)
    with Store(PgLocation(pg_url, f"pairs-{time.time_ns()}"), create=True) as store:
        ids = [c.id for c in store.add_clips([_clip(rng, t=2, with_states=False)] * 2000)]
        pairs = [(ids[0], ids[1]), (ids[-2], ids[-1]), (ids[5], ids[-1])]
        store.add_queries(pairs, 0)
        assert sorted(store.asked_pairs(ids)) == sorted(pairs)
        assert store.get_clips([ids[-1], ids[0]])[1].id == ids[0]  # chunked IN lists


# -- claims: which viewer shows which query ------------------------------------------------


def _store_with_queries(location, n: int = 6) -> Store:
    store = Store(location, create=True)
    c = store.add_clips([_clip(np.random.default_rng(i), t=3) for i in range(2 * n)])
    store.add_queries([(c[2 * i].id, c[2 * i + 1].id) for i in range(n)], 0)
    return store


def test_claims_give_each_query_to_one_viewer_and_expire(store_at):
    store = _store_with_queries(store_at())
    a = store.claim_next_query("A", lease=30)
    b = store.claim_next_query("B", lease=30)
    assert a.id != b.id
    assert store.claim_next_query("A", 30, exclude=[a.id]).id not in (a.id, b.id)
    store.release_claims("A")
    assert store.claim_next_query("C", 30).id == a.id  # released at once
    short = store.claim_next_query("D", lease=0.2)
    time.sleep(0.3)
    assert store.claim_next_query("E", 30).id == short.id  # expired
    # First answer wins; a second viewer's answer to the same query is not stored.
    assert store.add_viewer_label(a.id, "a", "human", annotator="alice") is not None
    assert store.add_viewer_label(a.id, "b", "human", annotator="bob") is None
    assert [(lab.choice, lab.annotator) for lab in store.labels()] == [("a", "alice")]
    undone = store.labels()[0].id
    assert store.undo_label(undone, "human", "C", 30, annotator="alice").id == a.id
    assert store.claim_holders().keys() >= {"C"}  # the undo claimed the query again
    assert store.counts().pending == 6
    store.close()


def test_copies_of_a_pair_go_to_different_people_and_repeats_to_the_same_one_last(store_at):
    """query.overlap stores a pair once per annotator wanted; query.repeat_fraction asks a
    person again about one of their answers, after everything else they can be given."""
    from rlhf.annotators import annotator_stats

    store = Store(store_at(), create=True)
    c = store.add_clips([_clip(np.random.default_rng(i)) for i in range(3)])
    a1, a2, b = store.add_queries([(c[0].id, c[1].id), (c[0].id, c[1].id),
                                   (c[1].id, c[2].id)], 0)
    assert store.claim_next_query("va", 30, annotator="alice") == a1
    # Not the other copy of the pair this viewer holds, even before answering it, nor to
    # alice's second window.
    assert store.claim_next_query("va", 30, exclude=[a1.id], annotator="alice") == b
    assert store.claim_next_query("va2", 30, annotator="alice") is None
    assert store.add_viewer_label(a1.id, "a", "human", annotator="alice") is not None
    assert store.claim_next_query("va", 30, exclude=[b.id], annotator="alice") is None
    # The trainer waits for b, not for a's second copy: nobody may be there to answer it.
    assert (store.counts().pending, store.counts().awaited) == (2, 1)
    assert store.claim_next_query("vb", 30, annotator="bob") == a2  # the pair's 2nd person
    assert store.add_viewer_label(a2.id, "b", "human", annotator="bob") is not None
    assert store.repeat_candidates() == []  # each person's only answer is their latest
    assert store.add_viewer_label(b.id, "a", "human", annotator="alice") is not None
    (first,) = store.repeat_candidates()  # alice's first answer, not her latest
    assert (first.query_id, first.annotator) == (a1.id, "alice")
    assert store.repeat_candidates(annotators=["bob"]) == []  # a teacher answering as bob
    (repeat,) = store.add_repeats([first], 1)
    assert (repeat.for_annotator, repeat.repeat_of) == ("alice", first.label_id)
    assert store.repeat_candidates() == []  # asked again once, not twice
    assert store.counts().awaited == 0  # a repeat is never waited for
    (fresh,) = store.add_queries([(c[0].id, c[2].id)], 1)
    assert store.claim_next_query("vb", 30, annotator="bob") == fresh  # not alice's repeat
    store.release_claims("vb")
    assert store.claim_next_query("vb", 30, exclude=[fresh.id], annotator="bob") is None
    assert store.claim_next_query("va", 30, annotator="alice") == fresh  # repeats come last
    assert store.claim_next_query("va", 30, exclude=[fresh.id], annotator="alice") == repeat
    assert store.add_viewer_label(repeat.id, "b", "human", annotator="alice") is not None
    rows = {r.annotator: r for r in annotator_stats(store.answered())}
    assert (rows["alice"].self_consistency, rows["alice"].self_consistency_n) == (0.0, 1)
    assert (rows["alice"].agreement, rows["bob"].agreement) == (0.5, 0.5)  # on pair a
    assert store.counts().pending == 1  # the fresh pair, still held by alice's viewer
    store.close()


def test_a_pair_is_repeated_once_per_person_and_never_after_their_latest_live_answer(store_at):
    store = Store(store_at(), create=True)
    c = store.add_clips([_clip(np.random.default_rng(i)) for i in range(3)])
    p1, p2 = store.add_queries([(c[0].id, c[1].id), (c[1].id, c[2].id)], 0)
    first = store.add_label(p1.id, "a", "human", annotator="alice")
    second = store.add_label(p2.id, "a", "human", annotator="alice")
    store.retract(second, "human", annotator="alice")  # undone: p1 is her latest again
    assert store.repeat_candidates() == []
    store.add_label(p2.id, "b", "human", annotator="alice")
    (candidate,) = store.repeat_candidates()
    assert candidate.label_id == first
    store.add_repeats([candidate], 1)
    store.retract(first, "human", annotator="alice")  # re-answered: a new label, same pair
    store.add_label(p1.id, "b", "human", annotator="alice")
    # Her answer on p1's pair was repeated to her already; only p2's may be now.
    assert [a.query_id for a in store.repeat_candidates()] == [p2.id]
    store.close()


def test_concurrent_claims_and_answers_never_hand_out_a_query_twice(store_at):
    location = store_at()
    _store_with_queries(location).close()
    got: dict[str, list[int]] = {}
    stored: dict[str, list[int]] = {}

    def viewer(name: str) -> None:
        store = Store(location)
        mine, answered = got.setdefault(name, []), stored.setdefault(name, [])
        while (q := store.claim_next_query(name, 30, exclude=mine)) is not None:
            mine.append(q.id)
            # Every viewer also tries to answer every query: only the first answer lands.
            for other in range(1, 7):
                if store.add_viewer_label(other, "a", "human", annotator=name) is not None:
                    answered.append(other)
        store.close()

    threads = [threading.Thread(target=viewer, args=(f"v{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [q for ids in got.values() for q in ids]
    assert len(claimed) == len(set(claimed))  # never the same query to two viewers
    assert sorted(q for ids in stored.values() for q in ids) == list(range(1, 7))
    with Store(location) as store:
        assert store.counts().label_events == 6  # each answered once, none twice


def test_a_damaged_clip_is_a_one_line_error(store_at):
    store = _store_with_queries(store_at(), n=1)
    store.db.execute("UPDATE clips SET data = ? WHERE id = 1", (b"not an npz",))
    with pytest.raises(StoreError, match="the data of clip 1 is damaged.*restore"):
        store.get_clips([1])
    with pytest.raises(StoreError, match="no clip with id 99"):
        store.get_clips([99])
    store.close()


# -- PostgreSQL: finding the run, the server, the schema -----------------------------------


def test_postgresql_run_is_found_by_name_and_refused_clearly(pg_url):
    name = f"named-{time.time_ns()}"
    with pytest.raises(StoreError, match=f"run {name}.*no such run on this server"):
        Store(PgLocation(pg_url, name))
    Store(PgLocation(pg_url, name), create=True).close()
    with pytest.raises(StoreError, match=f"runs there: .*{name}"):
        Store(PgLocation(pg_url, name + "x"))
    with pytest.raises(StoreError, match="cannot name a run"):
        PgLocation(pg_url, "bad name; drop")
    with pytest.raises(StoreError, match="also needs the run's name"):
        Store(pg_url)
    with Store(PgLocation(pg_url, name)) as store:  # opened again, as a writer would
        db = store.db
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99 is not one.*upgrade rlhf"):
        Store(PgLocation(pg_url, name))


def test_unreachable_server_is_one_line_naming_host_and_cause(tmp_path):
    start = time.monotonic()
    with pytest.raises(StoreError) as e:
        Store(PgLocation("postgresql://someone:secret@127.0.0.1:9/db", "r"), create=True)
    message = str(e.value)
    assert "127.0.0.1:9" in message and "refused" in message.lower()
    assert "secret" not in message and "\n" not in message
    assert time.monotonic() - start < 15


def test_postgresql_store_is_migrated_from_version_1_in_place(pg_url):
    location = PgLocation(pg_url, f"old-{time.time_ns()}")
    store = _store_with_queries(location, n=2)
    store.add_label(1, "a", "sim")
    store.add_label(2, "skip", "sim")
    before = store.preferences()
    for sql in _AS_VERSION_1:
        store.db.execute(sql)
    store.db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    store.close()
    with Store(location, readonly=True) as reader:  # a reader reads it as it is
        assert reader.version == 1 and reader.labels()[0].annotator is None
        assert [q.for_annotator for q in reader.queries()] == [None, None]
        assert reader.repeat_candidates() == []
    with Store(location) as store:
        assert store.version == SCHEMA_VERSION
        after = store.preferences()
        assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
        assert store.counts().labels == 2
        store.add_label(3 - 1, "b", "sim", annotator="carol")  # the new column takes it
        carols = [a for a in store.answered() if a.annotator == "carol"]
        (repeat,) = store.add_repeats(carols, 1)  # and so do the queries'
        assert store.get_query(repeat.id) == repeat and repeat.for_annotator == "carol"


_AS_VERSION_1 = ("ALTER TABLE labels DROP COLUMN annotator",
                 "ALTER TABLE queries DROP COLUMN for_annotator",
                 "ALTER TABLE queries DROP COLUMN repeat_of",
                 "ALTER TABLE queries DROP COLUMN claimed_annotator",
                 "DROP INDEX queries_pair")
"""What turns a new store's tables into those version 1 wrote."""


def test_sqlite_store_of_version_1_is_backed_up_then_migrated(tmp_path):
    path = tmp_path / "s.sqlite"
    store = _store_with_queries(path, n=3)
    for qid, choice in ((1, "a"), (2, "equal"), (3, "skip")):
        store.add_label(qid, choice, "sim")
    before, labels = store.preferences(), store.labels()
    store.close()
    db = sqlite3.connect(path)  # as version 1 wrote it
    for sql in _AS_VERSION_1:
        db.execute(sql)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Store(path, readonly=True) as reader:
        assert reader.version == 1 and [lab.annotator for lab in reader.labels()] == [None] * 3
    assert not list(tmp_path.glob("*.bak"))  # a reader changes nothing
    with Store(path) as store:
        after = store.preferences()
        assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
        assert [(x.id, x.choice) for x in store.labels()] == [(x.id, x.choice) for x in labels]
    backup = tmp_path / "s.sqlite.v1.bak"
    db = sqlite3.connect(backup)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 3
    db.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name='queries_pair'").fetchone()


def test_a_server_restart_loses_no_acknowledged_label_and_the_store_reconnects():
    """The server killed mid-run: the next write fails with one line (nothing half-written);
    once the server is back, the same Store carries on and every acknowledged label is
    there."""
    from pg import Cluster

    cluster = Cluster()
    try:
        store = _store_with_queries(PgLocation(cluster.url, "restart"), n=4)
        acknowledged = [store.add_label(q, "a", "sim") for q in (1, 2)]
        cluster.stop("immediate")  # a crash: no clean shutdown
        with pytest.raises(StoreError, match="lost the connection.*reconnects") as e:
            store.add_label(3, "b", "sim")
        assert "\n" not in str(e.value)
        with pytest.raises(StoreError, match="cannot reach the PostgreSQL server"):
            store.counts()  # still down: reconnecting fails in one line too
        cluster.start()
        assert [lab.id for lab in store.labels()] == acknowledged  # reconnected
        store.add_label(3, "b", "sim")
        assert store.counts().labels == 3
        store.close()
    finally:
        cluster.close()
