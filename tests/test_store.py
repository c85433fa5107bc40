import sqlite3

import numpy as np
import pytest

from rlhf.clips import Clip
from rlhf.store import SCHEMA_VERSION, Store, StoreCounts, StoreError


def _clip(rng, t=5, with_states=True) -> Clip:
    return Clip(obs=rng.normal(size=(t, 3)).astype(np.float32),
                actions=rng.normal(size=(t, 2)).astype(np.float32),
                rewards=rng.normal(size=t), dones=np.arange(t) == t - 1,
                last_obs=rng.normal(size=3).astype(np.float32),
                states=rng.normal(size=(t, 4)) if with_states else None, env_step=123)


def test_clips_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    clips = [_clip(rng), _clip(rng, with_states=False)]
    with Store(tmp_path / "s.sqlite", create=True) as store:
        stored = store.add_clips(clips)
    with Store(tmp_path / "s.sqlite") as store:  # reopened: really on disk
        back = store.get_clips([stored[1].id, stored[0].id])
    for orig, got in zip(clips, [back[1], back[0]], strict=True):
        for name in ("obs", "actions", "rewards", "dones", "last_obs"):
            a, b = getattr(orig, name), getattr(got, name)
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert (orig.states is None) == (got.states is None)
        if orig.states is not None:
            assert np.array_equal(orig.states, got.states)
        assert got.env_step == 123


def test_labels_are_append_only_with_undo(tmp_path):
    rng = np.random.default_rng(0)
    store = Store(tmp_path / "s.sqlite", create=True)
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


def test_label_errors(tmp_path):
    store = Store(tmp_path / "s.sqlite", create=True)
    with pytest.raises(StoreError, match="cannot label query 99: no such query"):
        store.add_label(99, "a", "bob")
    c = store.add_clips([_clip(np.random.default_rng(1)) for _ in range(2)])
    (q,) = store.add_queries([(c[0].id, c[1].id)], 0)
    with pytest.raises(StoreError, match="label choice must be one of"):
        store.add_label(q.id, "left", "bob")
    with pytest.raises(StoreError, match="cannot retract label 7"):
        store.retract(7, "bob")
    assert store.counts().label_events == 0


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


def test_counts_is_a_typed_record_with_the_json_keys(tmp_path):
    with Store(tmp_path / "s.sqlite", create=True) as store:
        counts = store.counts()
    assert isinstance(counts, StoreCounts)
    assert counts.as_dict() == {"clips": 0, "queries": 0, "labels": 0, "skipped": 0,
                                "pending": 0, "label_events": 0}
    assert list(counts.as_dict()) == ["clips", "queries", "labels", "skipped", "pending",
                                      "label_events"]


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
