"""The store's two backends side by side: label commit latency, and a trainer with several
viewer processes answering on one PostgreSQL run.

    python scripts/bench_store.py                       # a throw-away local cluster
    python scripts/bench_store.py --url postgresql://me@host/db

- **latency**: a viewer's answer (``add_viewer_label``: check, insert, release the claim, in
  one committed transaction) timed from the call to its return, SQLite (WAL, synchronous
  FULL) against PostgreSQL (fsync on, synchronous_commit on), ``--answers`` each, one
  process, alternating backends in blocks so both see the same machine load.
- **concurrency**: a trainer process asks ``--queries`` queries in batches while
  ``--viewers`` viewer processes claim and answer as fast as they can, each with its own
  connection; at the end every query must have exactly one label: none lost, none
  duplicated, none answered twice. Sustained pairs/s is answers over the wall time.

Prints one JSON line per measurement (results go in BENCHMARKS.md by hand).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from rlhf.clips import Clip  # noqa: E402
from rlhf.store import Store  # noqa: E402
from rlhf.store_pg import PgLocation  # noqa: E402


def _clip(rng: np.random.Generator) -> Clip:
    t = 50  # HalfCheetah's clip length and shapes
    return Clip(obs=rng.normal(size=(t, 17)).astype(np.float32),
                actions=rng.normal(size=(t, 6)).astype(np.float32), rewards=rng.normal(size=t),
                dones=np.zeros(t, bool), last_obs=np.zeros(17, np.float32),
                states=rng.normal(size=(t, 18)), env_step=0)


def _fill(store: Store, n: int, rng: np.random.Generator) -> None:
    clips = store.add_clips([_clip(rng) for _ in range(2 * n)])
    store.add_queries([(clips[2 * i].id, clips[2 * i + 1].id) for i in range(n)], 0)


def latency(url: str, answers: int, block: int = 50) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-bench-store-"))
    stores = {"sqlite": Store(tmp / "s.sqlite", create=True),
              "postgresql": Store(PgLocation(url, f"bench-latency-{time.time_ns()}"),
                                  create=True)}
    times: dict[str, list[float]] = {k: [] for k in stores}
    for store in stores.values():
        _fill(store, answers, rng)
    for start in range(0, answers, block):
        for name, store in stores.items():
            for _ in range(min(block, answers - start)):
                q = store.claim_next_query("bench", 60)
                assert q is not None
                t0 = time.perf_counter()
                assert store.add_viewer_label(q.id, "a", "human", annotator="bench") is not None
                times[name].append(time.perf_counter() - t0)
    for store in stores.values():
        store.close()
    return {name: {"p50_ms": 1e3 * statistics.median(t),
                   "p95_ms": 1e3 * float(np.percentile(t, 95)), "n": len(t)}
            for name, t in times.items()}


def _trainer(location: PgLocation, queries: int, batch: int) -> None:
    rng = np.random.default_rng(1)
    with Store(location) as store:
        for _ in range(0, queries, batch):
            _fill(store, batch, rng)
            time.sleep(0.01)


def _viewer(location: PgLocation, name: str, deadline: float, out: mp.Queue) -> None:
    answered: list[int] = []
    first = last = None
    with Store(location) as store:
        idle_since = None
        while time.monotonic() < deadline:
            q = store.claim_next_query(name, 60)
            if q is None:  # nothing waiting: the trainer may still be asking
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 3.0:
                    break
                time.sleep(0.005)
                continue
            idle_since = None
            if store.add_viewer_label(q.id, "a", "human", annotator=name) is not None:
                answered.append(q.id)
                last = time.time()
                first = first or last
    out.put((name, (answered, first, last)))


def concurrency(url: str, queries: int, viewers: int, batch: int = 50) -> dict[str, object]:
    location = PgLocation(url, f"bench-concurrency-{time.time_ns()}")
    Store(location, create=True).close()
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    t0 = time.monotonic()
    trainer = ctx.Process(target=_trainer, args=(location, queries, batch))
    procs = [ctx.Process(target=_viewer, args=(location, f"v{i}", t0 + 600, results))
             for i in range(viewers)]
    trainer.start()
    for p in procs:
        p.start()
    done = dict(results.get(timeout=900) for _ in procs)
    trainer.join()
    for p in procs:
        p.join()
    got = {name: ids for name, (ids, _, _) in done.items()}
    # From the first answer to the last: process start-up and the final idle wait are not
    # answering.
    wall = max(v[2] for v in done.values() if v[2]) - min(v[1] for v in done.values() if v[1])
    answered = [q for ids in got.values() for q in ids]
    with Store(location, readonly=True) as store:
        counts = store.counts()
        per_query = [a.query_id for a in store.answered()]
    return {"queries": counts.queries, "answered": len(answered),
            "lost": counts.queries - len(set(per_query)),
            "duplicated": len(per_query) - len(set(per_query)),
            "answered_twice": len(answered) - len(set(answered)),
            "label_events": counts.label_events, "pairs_per_s": len(answered) / wall,
            "per_viewer": {k: len(v) for k, v in got.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a PostgreSQL server (default: a throw-away local one)")
    ap.add_argument("--answers", type=int, default=500)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--viewers", type=int, default=4)
    args = ap.parse_args()
    cluster = None
    url = args.url
    if url is None:
        from pg import Cluster

        cluster = Cluster()
        url = cluster.url
    try:
        print(json.dumps({"machine": platform.processor() or platform.machine(),
                          "cores": mp.cpu_count()}))
        print(json.dumps({"latency": latency(url, args.answers)}))
        print(json.dumps({"concurrency": concurrency(url, args.queries, args.viewers)}))
    finally:
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
