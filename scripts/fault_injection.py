#!/usr/bin/env python
"""Inject faults into real training runs and count what was lost. Results: docs/reliability.md.

    python scripts/fault_injection.py [--kills 6] [--seed 0] [--out runs/faults]

Each trial starts ``rlhf train configs/smoke.yaml`` (or ``--config``, e.g. the SAC smoke
run with its replay buffer in the checkpoint; 4 iterations, 40 labels) in a
subprocess and stops it: SIGKILL at a random moment, SIGKILL at a failpoint (storing clips,
mid-label-batch, mid-fit, mid-checkpoint-write; see rlhf/faults.py), or SIGTERM. Then it
resumes the run with ``rlhf train --resume`` and checks: every label present before the
stop is still there, each query answered once, no pair asked twice, the run finishes.
Then it feeds malformed config overrides and store calls and counts uncaught errors.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf.config import ConfigError, load_config  # noqa: E402
from rlhf.store import Store, StoreCounts, StoreError  # noqa: E402

RUN = ["loop.total_timesteps=2048", "loop.iterations=4", "loop.total_labels=40",
       "eval.every=0", "eval.episodes=1"]
FAILPOINTS = ["ask:2", "label:3", "fit:2", "checkpoint:2"]


def labels(run_dir: Path) -> set[tuple[int, str]]:
    if not (run_dir / "store.sqlite").exists():
        return set()
    with Store(run_dir / "store.sqlite") as store:
        return {(lab.query_id, lab.choice) for lab in store.labels()}


def trial(run_dir: Path, kind: str, rng: random.Random, duration: float,
          config: str = "configs/smoke.yaml") -> dict:
    """One run of ``config`` stopped by ``kind``, then resumed; ``duration``: an undisturbed
    run's seconds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind.startswith("failpoint:"):
        env["RLHF_FAILPOINT"] = kind.split(":", 1)[1]
    cmd = [sys.executable, "-m", "rlhf.cli", "train", config, *RUN,
           "--run-dir", str(run_dir), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if kind in ("kill", "term"):
        time.sleep(rng.uniform(1.0, 0.9 * duration))
        proc.send_signal(signal.SIGKILL if kind == "kill" else signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    before = labels(run_dir)
    tracebacks = int("Traceback" in err)
    resumed = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume",
                              str(run_dir), "--quiet"], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    tracebacks += int("Traceback" in resumed.stderr)
    after = labels(run_dir)
    counts, pairs = StoreCounts(0, 0, 0, 0, 0, 0, 0), []
    if (run_dir / "store.sqlite").exists():
        with Store(run_dir / "store.sqlite") as store:
            counts = store.counts()
            pairs = [tuple(sorted((q.clip_a, q.clip_b))) for q in
                     (store.get_query(i) for i in range(1, counts.queries + 1))]
    return {"kind": kind, "landed": proc.returncode != 0, "stopped_rc": proc.returncode,
            "resume_rc": resumed.returncode,
            "labels_before": len(before), "labels_lost": len(before - after),
            "labels_after": len(after), "label_events": counts.label_events,
            "duplicate_pairs": len(pairs) - len(set(pairs)), "tracebacks": tracebacks,
            "finished": resumed.returncode == 0 and counts.labels == 40}


def malformed_inputs(n: int, rng: random.Random, tmp: Path) -> Counter:
    keys = ["seed", "env.id", "env.n_envs", "reward.ensemble", "reward.lr", "teacher.beta",
            "loop.total_labels", "loop.clip_length", "query.strategy", "nonsense", "reward",
            "reward.hidden", "agent.kwargs", "teacher.kind"]
    values = ["-1", "0", "abc", "[1, -2]", "{a: 1}", "nan", "inf", "''", "1e400", "true",
              "null", "[", "3.5"]
    out: Counter = Counter()
    for _ in range(n):
        overrides = [f"{rng.choice(keys)}={rng.choice(values)}" for _ in range(rng.randint(1, 3))]
        try:
            load_config(overrides=overrides)
            out["config_accepted"] += 1
        except ConfigError:
            out["config_clear_error"] += 1
        except Exception:
            out["config_uncaught"] += 1
    store = Store(tmp / "malformed.sqlite", create=True)
    for _ in range(n):
        try:
            if rng.random() < 0.5:
                store.add_label(rng.randint(-3, 5), rng.choice(["a", "b", "left", "", "skip"]),
                                "fuzz")
            else:
                store.retract(rng.randint(-3, 5), "fuzz")
            out["store_accepted"] += 1
        except StoreError:
            out["store_clear_error"] += 1
        except Exception:
            out["store_uncaught"] += 1
    store.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=6, help="SIGKILLs at random moments")
    p.add_argument("--terms", type=int, default=2, help="SIGTERMs at random moments")
    p.add_argument("--malformed", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="configs/smoke.yaml",
                   help="the run to stop (configs/smoke_sac.yaml: SAC with its replay buffer)")
    p.add_argument("--out", default="runs/faults")
    args = p.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = (["kill"] * args.kills + ["term"] * args.terms
             + [f"failpoint:{f}" for f in FAILPOINTS])
    t0 = time.perf_counter()  # an undisturbed run, to aim the random stops inside one
    subprocess.run([sys.executable, "-m", "rlhf.cli", "train", args.config, *RUN,
                    "--run-dir", str(out / "undisturbed"), "--quiet", "--force"], cwd=ROOT,
                   check=True, capture_output=True)
    duration = time.perf_counter() - t0
    rows = []
    for i, kind in enumerate(kinds):
        row = trial(out / f"trial-{i:02d}", kind, rng, duration, args.config)
        rows.append(row)
        print(json.dumps(row), flush=True)
    malformed = malformed_inputs(args.malformed, rng, out)
    print(json.dumps(dict(malformed)), flush=True)
    landed = [r for r in rows if r["landed"]]
    summary = {
        "faults_injected": dict(Counter(r["kind"] for r in landed)),
        "faults_that_missed": len(rows) - len(landed),  # the run finished first
        "runs_resumed_and_finished": sum(r["finished"] for r in landed),
        "runs": len(rows),
        "labels_lost": sum(r["labels_lost"] for r in rows),
        "duplicate_pairs": sum(r["duplicate_pairs"] for r in rows),
        "extra_label_events": sum(r["label_events"] - 40 for r in rows),
        "checkpoint_write_interruptions": sum(r["kind"].startswith("failpoint:checkpoint")
                                              for r in landed),
        "malformed_inputs": 2 * args.malformed,
        "uncaught_tracebacks": sum(r["tracebacks"] for r in rows)
        + malformed["config_uncaught"] + malformed["store_uncaught"],
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
