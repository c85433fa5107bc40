#!/usr/bin/env python
"""The hostile-input suite: what a careless or hostile user does to rlhf, and whether each
promise held. Results: docs/reliability.md.

    python scripts/hostile_input.py [--quick] [--fuzz 200] [--seed 0] [--out runs/hostile]
                                    [--json results.json]

Each attack runs a real command (``rlhf.cli.main`` in this process, or a subprocess where
processes matter: concurrent trainers, kills) against real files: a finished smoke run made
at the start, copied for every attack that damages one. An attack **held** when

- the command refused with exit 2 and one line (``rlhf: error: ...``), or did what was
  asked, as the attack's class expects;
- nothing escaped as a traceback;
- no label was lost, and no file the attack pointed at (a run's store, a user's file) was
  changed.

Classes: config values (every numeric field: huge, NaN, infinite, negative, wrong types),
YAML files (duplicate keys, alias bombs, encodings, tags, sizes), overrides and SB3 kwargs,
output paths (screenshots, plots and videos aimed at a run's files or a user's), damaged run
directories and checkpoints (each against status, eval, resume and the viewer), ``--force``
on directories that are not runs, concurrent trainers, read-only and full disks, exceptions
inside the user's env, kills at failpoints, and property-based fuzzing of overrides
(hypothesis). It prints a table: tried, held, broke, per class.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # broken_envs: envs that fail on purpose
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")

from rlhf.cli import main as cli_main  # noqa: E402
from rlhf.config import ConfigError, load_config, numeric_fields  # noqa: E402
from rlhf.store import Store  # noqa: E402

TINY = ["loop.total_timesteps=512", "loop.total_labels=10", "loop.iterations=1",
        "loop.initial_timesteps=200", "eval.episodes=1"]


@dataclass
class Outcome:
    held: bool
    detail: str = ""
    traceback: bool = False
    labels_lost: int = 0


@dataclass(frozen=True)
class Attack:
    cls: str
    name: str
    run: Callable[[Path], Outcome]


# -- running a command and judging it --------------------------------------------------------


@dataclass
class Result:
    code: int | None
    out: str
    err: str
    traceback: bool

    def one_line_error(self) -> str | None:
        """The error line, when stderr is exactly one ``rlhf: error:`` line (warnings aside)."""
        lines = [x for x in self.err.splitlines() if x.strip() and "Warning" not in x
                 and not x.startswith((" ", "warnings.warn"))]
        if len(lines) == 1 and lines[0].startswith("rlhf: error:"):
            return lines[0]
        return None


def cli(*argv: str) -> Result:
    """``rlhf ARGV`` in this process; an exception escaping ``main`` is a traceback."""
    out, err = io.StringIO(), io.StringIO()
    code: int | None
    tb = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(list(argv))
        except SystemExit as e:  # argparse's own usage errors
            code = e.code if isinstance(e.code, int) else 2
        except BaseException as e:
            code, tb = None, True
            err.write(f"Traceback: {type(e).__name__}: {e}\n")
    return Result(code, out.getvalue(), err.getvalue(), tb or "Traceback" in err.getvalue())


def refused(result: Result, *words: str) -> Outcome:
    """Held if the command exited 2 with one error line containing every word."""
    line = result.one_line_error()
    ok = result.code == 2 and line is not None and all(w.lower() in line.lower() for w in words)
    return Outcome(ok, (line or result.err.strip()[-300:] or f"exit {result.code}"),
                   result.traceback)


def labels(run_dir: Path) -> set[tuple[int, str]]:
    store = run_dir / "store.sqlite"
    if not store.is_file() or store.stat().st_size == 0:
        return set()
    try:
        with Store(store) as s:
            return {(lab.query_id, lab.choice) for lab in s.labels()}
    except Exception:
        return set()


def digest(path: Path) -> str:
    """A hash of every file under ``path`` (names and bytes), to prove nothing changed."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file() and not p.name.endswith(("-shm", ".lock")):
            h.update(str(p.relative_to(path.parent)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# -- 1. config values: every numeric field, out of any sane range --------------------------


BAD_VALUES = ["1e30", "-1e30", ".nan", "abc", "[1, 2]", "{a: 1}", "true"]
BAD_LISTS = ["1e30", "[1e30]", "[.nan]", "[-1]", "abc", "{a: 1}", "[]", "[" + "8, " * 99 + "8]"]
"""For numeric lists (layer widths): huge, NaN or negative items, no items, 100 layers."""
# beta is a rationality: infinite (and so huge) is perfectly rational; a threshold on
# returns may be hugely negative ("never skip"). Those few values are accepted by design.
MAY_ACCEPT = {("teacher.beta", "1e30"), ("teacher.skip_threshold", "-1e30"),
              ("teacher.skip_threshold", "1e30")}


def config_value_attacks() -> list[Attack]:
    attacks = []
    for key, kind in numeric_fields():
        for raw in BAD_VALUES if kind == "number" else BAD_LISTS:
            def run(_: Path, key: str = key, raw: str = raw) -> Outcome:
                try:
                    load_config(overrides=[f"{key}={raw}"])
                except ConfigError as e:
                    ok = key in str(e) and "\n" not in str(e)
                    return Outcome(ok, str(e)[:200])
                except Exception as e:
                    return Outcome(False, f"{type(e).__name__}: {e}", traceback=True)
                return Outcome((key, raw) in MAY_ACCEPT, "accepted")
            attacks.append(Attack("config values", f"{key}={raw}", run))
    return attacks


# -- 2. YAML files ------------------------------------------------------------------------

def _bomb(levels: int) -> str:
    lines = ["agent:", "  kwargs:", "    l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


YAML_FILES: dict[str, bytes] = {
    "duplicate top-level key": b"seed: 1\nseed: 2\n",
    "duplicate nested key": b"reward:\n  ensemble: 3\n  ensemble: 5\n",
    "duplicate key in agent.kwargs": b"agent:\n  kwargs:\n    n_steps: 64\n    n_steps: 128\n",
    "alias bomb, 9 levels": _bomb(9).encode(),
    "alias bomb, 6 levels": _bomb(6).encode(),
    "latin-1 text": "name: caf\xe9\n".encode("latin-1"),
    "UTF-16 with BOM": "seed: 1\n".encode("utf-16"),
    "binary garbage": bytes(range(256)) * 4,
    "NUL bytes": b"seed: 1\x00\x00\n",
    "python object tag": b"seed: !!python/object/apply:os.system ['echo pwned']\n",
    "top level is a list": b"- seed: 1\n",
    "top level is a string": b"just some words\n",
    "unclosed bracket": b"reward:\n  hidden: [64, 64\n",
    "tab indentation": b"reward:\n\tensemble: 3\n",
    "deep nesting": b"agent:\n  kwargs:\n    x: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "2 MB file": b"# " + b"x" * 2_000_000 + b"\nseed: 1\n",
    "unknown section": b"rewards:\n  ensemble: 3\n",
    "section given a value": b"reward: 3\n",
    "huge integer literal": b"query:\n  pool_size: " + b"9" * 400 + b"\n",
    "merge key into section": b"base: &b {ensemble: 3}\nreward:\n  <<: *b\n",
}


def yaml_attacks(tmp: Path) -> list[Attack]:
    attacks = []
    for name, data in YAML_FILES.items():
        def run(work: Path, data: bytes = data) -> Outcome:
            path = work / "config.yaml"
            path.write_bytes(data)
            result = cli("train", str(path), "--run-dir", str(work / "run"), "--quiet", *TINY)
            out = refused(result)
            if (work / "run").exists():
                out.held, out.detail = False, "a run directory was created: " + out.detail
            return out
        attacks.append(Attack("YAML files", name, run))
    # A directory, a missing file, a FIFO: one line each.
    for name, make in (("a directory", lambda p: p.mkdir()),
                       ("a missing file", lambda p: None),
                       ("a FIFO", lambda p: os.mkfifo(p))):
        def run(work: Path, make: Callable[[Path], None] = make) -> Outcome:
            path = work / "cfg.yaml"
            make(path)
            return refused(cli("train", str(path), "--run-dir", str(work / "run"), "--quiet"))
        attacks.append(Attack("YAML files", f"config path is {name}", run))
    return attacks


# -- 3. overrides and SB3 kwargs ------------------------------------------------------------

OVERRIDES = [
    "=5", "reward..ensemble=3", "reward=3", "reward.ensemble.members=3", "nonsense=1",
    "reward.ensembel=3", "env.n_envs=1e6", "seed=-1", "seed=99999999999",
    "loop.total_labels=1e30", "reward.ensemble=1e9", "reward.lr=.inf", "reward.weight_decay=.inf",
    "reward.hidden=[100000000]", "reward.hidden=[]", "reward.hidden=[64, -1]",
    "loop.clip_length=1e9", "query.pool_size=1e12", "viewer.width=1e9", "eval.episodes=1e9",
    "env.id=", "env.id=no.such.module:Env", "env.id=os:system", "teacher.score=os:system",
    "teacher.kind=god", "query.strategy=psychic", "reward.device=tpu", "reward.device=cuda:99",
    "agent.algo=DQN", "agent.kwargs.bogus=1", "agent.kwargs.n_steps=0",
    "agent.kwargs.batch_size=-3", "agent.kwargs.learning_rate=.inf",
    "agent.kwargs.learning_rate=.nan", "agent.kwargs.gamma=2", "agent.kwargs.n_epochs=1e9",
    "agent.kwargs.policy_kwargs.net_arch=[1000000000]", "agent.kwargs.policy_kwargs={a: 1}",
    "agent.kwargs.device=cuda:99", "agent.policy=NoSuchPolicy", "env.kwargs.bogus=1",
    "env.imports=[no_such_module_xyz]", "agent.kwargs={a: 1, a: 2}",
]


def override_attacks() -> list[Attack]:
    attacks = []
    for item in OVERRIDES:
        def run(work: Path, item: str = item) -> Outcome:
            result = cli("train", "configs/smoke.yaml", "--run-dir", str(work / "run"),
                         "--quiet", *TINY, item)  # last: the attack wins over TINY
            out = refused(result)
            if (work / "run").exists():
                out.held, out.detail = False, "a run directory was created: " + out.detail
            return out
        attacks.append(Attack("overrides and SB3 kwargs", item, run))
    # On resume: keys the run's labels depend on cannot change; config.yaml stays as it was.
    for item in ("loop.clip_length=5", "env.id=CartPole-v1", "seed=4", "reward.hidden=[8]",
                 "reward.device=cuda:99", "eval.episodes=0", "viewer.speed=100"):
        def run(work: Path, item: str = item, base: Path | None = None) -> Outcome:
            run_dir = copy_base(work)
            before = digest(run_dir / "config.yaml")
            out = refused(cli("train", "--resume", str(run_dir), item, "--quiet"))
            if digest(run_dir / "config.yaml") != before:
                out.held, out.detail = False, "config.yaml changed: " + out.detail
            return out
        attacks.append(Attack("overrides and SB3 kwargs", f"--resume {item}", run))
    return attacks


# -- the base run, and copies of it ---------------------------------------------------------

BASE: Path | None = None


def copy_base(work: Path) -> Path:
    assert BASE is not None
    dst = work / "run"
    shutil.copytree(BASE, dst, symlinks=True)
    return dst


# -- 4. output paths ------------------------------------------------------------------------

OUTPUT_COMMANDS = {
    "screenshot": lambda run, out, *f: ("label", str(run), "--screenshot", str(out), *f),
    "plot": lambda run, out, *f: ("plot", str(run), "--out", str(out), *f),
    "video": lambda run, out, *f: ("eval", str(run), "--episodes", "1", "--video", str(out),
                                   *f),
}


def output_attacks() -> list[Attack]:
    targets: dict[str, Callable[[Path, Path], Path]] = {
        "the run's store.sqlite": lambda run, user: run / "store.sqlite",
        "the run's config.yaml": lambda run, user: run / "config.yaml",
        "a .png symlink to the store": lambda run, user: _link(run / "shot.png",
                                                              run / "store.sqlite"),
        "a new .png inside the run": lambda run, user: run / "new.png",
        "a .png inside checkpoints/": lambda run, user: run / "checkpoints" / "x.png",
        "a user's existing image": lambda run, user: _file(user / "mine.png"),
        "a user's existing gif": lambda run, user: _file(user / "mine.gif"),
        "a user's text file": lambda run, user: _file(user / "notes.txt"),
        "a user's directory named like an image": lambda run, user: _dir(user / "d.png"),
        "an outside .png symlink to a user file": lambda run, user: _link(
            user / "l.png", _file(user / "precious.db")),
    }
    attacks = []
    for command, argv in OUTPUT_COMMANDS.items():
        for target_name, target in targets.items():
            for force in ((), ("--force",)):
                def run(work: Path, argv=argv, target=target, force=force) -> Outcome:
                    run_dir = copy_base(work)
                    user = work / "user"
                    user.mkdir()
                    path = target(run_dir, user)
                    before_run, before_user = digest(run_dir), digest(user)
                    lost = labels(BASE)
                    result = cli(*argv(run_dir, path, *force))
                    lost = len(lost - labels(run_dir))
                    out = refused(result)
                    if digest(run_dir) != before_run:
                        return Outcome(False, "the run directory changed", result.traceback,
                                       lost)
                    overwritable = force and path.suffix in (".png", ".gif") \
                        and path.is_file() and not path.is_symlink()
                    if overwritable and result.code == 0:  # --force on the user's own image
                        return Outcome(not result.traceback, "replaced with --force")
                    if digest(user) != before_user:
                        return Outcome(False, "a user file changed", result.traceback, lost)
                    out.labels_lost = lost
                    return out
                flag = " --force" if force else ""
                attacks.append(Attack("output paths", f"{command} onto {target_name}{flag}",
                                      run))
    return attacks


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _file(path: Path) -> Path:
    path.write_bytes(b"the user's own bytes")
    return path


def _dir(path: Path) -> Path:
    path.mkdir()
    (path / "inside").write_text("x")
    return path


# -- 5. damaged run directories and checkpoints ----------------------------------------------

def _latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text().strip()


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _safetensors(path: Path, edit: Callable[[dict], dict]) -> None:
    from safetensors.torch import load_file, save_file

    save_file(edit(load_file(str(path))), str(path))


def _nan_weights(t: dict) -> dict:
    key = next(k for k, v in t.items() if v.is_floating_point())
    t[key] = t[key].clone().fill_(float("nan"))
    return t


def _drop_one(t: dict) -> dict:
    t.pop(sorted(t)[0])
    return t


def _half(t: dict) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in t.items()}


def _rng_as_float(t: dict) -> dict:
    t["rng.torch"] = t["rng.torch"].float()
    return t


DAMAGES: dict[str, tuple[Callable[[Path], None], bool]] = {
    # name: (damage, the store itself is damaged)
    "store.sqlite deleted": (lambda r: (r / "store.sqlite").unlink(), True),
    "store.sqlite emptied": (lambda r: _truncate(r / "store.sqlite", 0), True),
    "store.sqlite a dangling symlink": (
        lambda r: ((r / "store.sqlite").unlink(),
                   (r / "store.sqlite").symlink_to(r / "gone" / "store.sqlite")), True),
    "store.sqlite truncated to half": (
        lambda r: _truncate(r / "store.sqlite", (r / "store.sqlite").stat().st_size // 2), True),
    "store.sqlite truncated to 100 bytes": (lambda r: _truncate(r / "store.sqlite", 100), True),
    "store.sqlite overwritten with text": (
        lambda r: (r / "store.sqlite").write_text("hello"), True),
    "config.yaml deleted": (lambda r: (r / "config.yaml").unlink(), False),
    "config.yaml garbage": (lambda r: (r / "config.yaml").write_bytes(b"\xff\xfe\x00"), False),
    "LATEST binary": (lambda r: (r / "checkpoints" / "LATEST").write_bytes(bytes(range(256))),
                      False),
    "LATEST empty": (lambda r: (r / "checkpoints" / "LATEST").write_text(""), False),
    "LATEST names ../../etc": (lambda r: (r / "checkpoints" / "LATEST").write_text("../../etc"),
                               False),
    "LATEST names an absolute path": (
        lambda r: (r / "checkpoints" / "LATEST").write_text("/etc"), False),
    "LATEST names a missing checkpoint": (
        lambda r: (r / "checkpoints" / "LATEST").write_text("it-00099-0000000000"), False),
    "state.json is a list": (lambda r: (_latest(r) / "state.json").write_text("[]"), False),
    "state.json is a number": (lambda r: (_latest(r) / "state.json").write_text("3"), False),
    "state.json truncated": (lambda r: _truncate(_latest(r) / "state.json", 10), False),
    "state.json iteration is text": (
        lambda r: (_latest(r) / "state.json").write_text(json.dumps(
            {**json.loads((_latest(r) / "state.json").read_text()), "iteration": "one"})),
        False),
    "status.json truncated": (lambda r: _truncate(r / "status.json", 7), False),
    "status.json is a list": (lambda r: (r / "status.json").write_text("[1]"), False),
    "metrics.csv ragged": (lambda r: (r / "metrics.csv").write_text("a,b\n1,2,3,4\n"), False),
    "metrics.csv binary": (lambda r: (r / "metrics.csv").write_bytes(bytes(range(256))), False),
    "reward_model.safetensors NaN weights": (
        lambda r: _safetensors(_latest(r) / "reward_model.safetensors", _nan_weights), False),
    "reward_model.safetensors entry missing": (
        lambda r: _safetensors(_latest(r) / "reward_model.safetensors", _drop_one), False),
    "reward_model.safetensors float16": (
        lambda r: _safetensors(_latest(r) / "reward_model.safetensors", _half), False),
    "reward_model.safetensors truncated": (
        lambda r: _truncate(_latest(r) / "reward_model.safetensors", 50), False),
    "reward_model.json not an object": (
        lambda r: (_latest(r) / "reward_model.json").write_text("[]"), False),
    "trainer.safetensors rng as float": (
        lambda r: _safetensors(_latest(r) / "trainer.safetensors", _rng_as_float), False),
    "trainer.safetensors truncated": (
        lambda r: _truncate(_latest(r) / "trainer.safetensors", 20), False),
    "policy.zip truncated": (lambda r: _truncate(_latest(r) / "policy.zip", 100), False),
    "policy.zip deleted": (lambda r: (_latest(r) / "policy.zip").unlink(), False),
    "obs_rms.npz garbage": (lambda r: (_latest(r) / "obs_rms.npz").write_bytes(b"PK\x03\x04xx"),
                            False),
}

DAMAGE_COMMANDS: dict[str, Callable[[Path, Path], tuple[str, ...]]] = {
    "status": lambda run, work: ("status", str(run)),
    "eval": lambda run, work: ("eval", str(run), "--episodes", "1"),
    "resume": lambda run, work: ("train", "--resume", str(run), "--quiet"),
    "screenshot": lambda run, work: ("label", str(run), "--screenshot", str(work / "s.png")),
}
# Derived files a reader may report and go on without (the store and checkpoints are not).
TOLERABLE = ("status.json", "metrics.csv")


def damage_attacks() -> list[Attack]:
    attacks = []
    for name, (damage, store_damaged) in DAMAGES.items():
        for command, argv in DAMAGE_COMMANDS.items():
            def run(work: Path, damage=damage, store_damaged=store_damaged, argv=argv,
                    command=command, name=name) -> Outcome:
                run_dir = copy_base(work)
                before = labels(run_dir)
                damage(run_dir)
                result = cli(*argv(run_dir, work))
                lost = 0 if store_damaged else len(before - labels(run_dir))
                if result.traceback:
                    return Outcome(False, result.err[-300:], True, lost)
                if result.code == 0:
                    # Fine where the command does not need what was damaged.
                    # (The smoke run does not normalise observations: obs_rms is unread.)
                    needs = {"status": ("store", "config.yaml deleted"),
                             "eval": ("config", "LATEST", "policy"),
                             "resume": ("store", "config", "LATEST", "state", "reward_model",
                                        "trainer", "policy"),
                             "screenshot": ("store", "config")}[command]
                    ok = not any(n in name for n in needs) or name.startswith(TOLERABLE)
                    return Outcome(ok and lost == 0, f"exit 0: {result.out.strip()[:120]}",
                                   False, lost)
                line = result.one_line_error()
                ok = result.code == 2 and line is not None
                if ok and store_damaged and "intact" in line:
                    ok = False  # never reassure about a store that is damaged
                if ok and "restore it from a copy" in line and not store_damaged \
                        and "store.sqlite" in line:
                    ok = False  # never invite a destructive fix of a healthy store
                return Outcome(ok and lost == 0, line or result.err[-300:], False, lost)
            attacks.append(Attack("damaged runs and checkpoints", f"{name}: {command}", run))
    return attacks


# -- 6. --force on directories that are not runs --------------------------------------------

FORCE_DIRS: dict[str, dict[str, bytes | None]] = {
    "a thesis folder": {"chapter1.tex": b"months of work", "refs.bib": b"@book{}"},
    "a folder with checkpoints/ of another tool": {"checkpoints/model.pt": b"weights"},
    "a folder with tb/ of another tool": {"tb/events.out.tfevents.1": b"x", "notes.md": b"n"},
    "a run-like folder with a stranger": {"store.sqlite": None, "config.yaml": None,
                                         "my_notes.txt": b"keep me"},
    "a run with a stranger in checkpoints/": {"config.yaml": None,
                                              "checkpoints/best.pt": b"keep me"},
    "config.yaml of another program": {"config.yaml": b"server: {port: 80}\n",
                                      "metrics.csv": b"my,data\n"},
    "a metrics.csv only": {"metrics.csv": b"my,data\n"},
    "a symlinked checkpoints/": {"config.yaml": None, "checkpoints": "symlink"},  # type: ignore
}


def force_attacks() -> list[Attack]:
    attacks = []
    for name, files in FORCE_DIRS.items():
        def run(work: Path, files=files) -> Outcome:
            target = work / "target"
            target.mkdir()
            elsewhere = work / "elsewhere"
            elsewhere.mkdir()
            (elsewhere / "precious.txt").write_text("keep me")
            for rel, data in files.items():
                path = target / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                if data == "symlink":
                    path.symlink_to(elsewhere)
                elif data is None:
                    assert BASE is not None
                    shutil.copy(BASE / rel, path)
                else:
                    path.write_bytes(data)
            before, before_elsewhere = digest(target), digest(elsewhere)
            out = refused(cli("train", "configs/smoke.yaml", "--run-dir", str(target),
                              "--force", "--quiet", *TINY), "--force")
            if digest(target) != before or digest(elsewhere) != before_elsewhere:
                out.held, out.detail = False, "files were changed: " + out.detail
            return out
        attacks.append(Attack("--force on non-runs", name, run))
    return attacks


# -- 7. concurrent trainers (subprocesses) ---------------------------------------------------


def _killed_mid_run(work: Path) -> Path:
    run_dir = work / "stopped"
    subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml",
                    "--run-dir", str(run_dir), *TINY[:-1], "eval.episodes=1",
                    "loop.iterations=2", "loop.total_timesteps=1024", "--quiet"], cwd=ROOT,
                   env={**os.environ, "RLHF_FAILPOINT": "checkpoint:2"}, capture_output=True,
                   timeout=600)
    return run_dir


def concurrent_attacks() -> list[Attack]:
    def run(work: Path, n: int, new_run: bool) -> Outcome:
        run_dir = work / "fresh" if new_run else _killed_mid_run(work)
        before = labels(run_dir)
        cmd = ([sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml", "--run-dir",
                str(run_dir), *TINY, "--quiet"] if new_run else
               [sys.executable, "-m", "rlhf.cli", "train", "--resume", str(run_dir), "--quiet"])
        procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(n)]
        results = [p.communicate(timeout=600) for p in procs]
        codes = sorted(p.returncode for p in procs)
        tb = any("Traceback" in err for _, err in results)
        with Store(run_dir / "store.sqlite") as store:
            counts = store.counts()
        ok = codes == [0] + [2] * (n - 1) and counts.queries == counts.labels == 10 \
            and counts.label_events == 10
        return Outcome(ok and not tb, f"exit codes {codes}, {counts.queries} queries", tb,
                       len(before - labels(run_dir)))
    return [Attack("concurrent trainers", "2 resumes of a stopped run", lambda w: run(w, 2, False)),
            Attack("concurrent trainers", "3 resumes of a stopped run", lambda w: run(w, 3, False)),
            Attack("concurrent trainers", "2 new runs in one directory",
                   lambda w: run(w, 2, True))]


# -- 8. read-only and full disks (root: a read-only bind mount, a small tmpfs) ---------------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def disk_attacks() -> list[Attack]:
    attacks = []
    readers = {"status": (0,), "eval": (0,), "screenshot": (0, 2), "resume": (2,)}
    for command, codes in readers.items():
        def run(work: Path, command=command, codes=codes) -> Outcome:
            src = copy_base(work)
            ro = work / "ro"
            ro.mkdir()
            if not (_mount("--bind", str(src), str(ro))
                    and _mount("-o", "remount,bind,ro", str(ro))):
                return Outcome(False, "could not mount read-only (needs root)")
            try:
                before = digest(src)
                result = cli(*DAMAGE_COMMANDS[command](ro, work))
                line = result.one_line_error()
                ok = result.code in codes and not result.traceback and digest(src) == before
                if result.code == 2:
                    ok = ok and line is not None and "read-only" in line \
                        and "corrupt" not in line
                return Outcome(ok, line or f"exit {result.code}", result.traceback)
            finally:
                subprocess.run(["umount", str(ro)], capture_output=True)
        attacks.append(Attack("read-only and full disks", f"read-only run: {command}", run))

    def full(work: Path, fill_at: str) -> Outcome:
        disk = work / "disk"
        disk.mkdir()
        if not _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)):
            return Outcome(False, "could not mount a tmpfs (needs root)")
        try:
            run_dir = disk / "run"
            env = {**os.environ, "RLHF_FAILPOINT": fill_at}
            subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "configs/smoke.yaml",
                            "--run-dir", str(run_dir), *TINY[:-1], "loop.iterations=2",
                            "loop.total_timesteps=1024", "eval.episodes=1", "--quiet"],
                           cwd=ROOT, env=env, capture_output=True, timeout=600)
            before = labels(run_dir)
            subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=64k"],
                           capture_output=True)
            out = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume",
                                  str(run_dir), "--quiet"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=600)
            line = Result(out.returncode, out.stdout, out.stderr, False).one_line_error()
            ok = out.returncode == 2 and line is not None and "full" in line
            (disk / "filler").unlink()
            lost = len(before - labels(run_dir))
            again = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "--resume",
                                    str(run_dir), "--quiet"], cwd=ROOT, capture_output=True,
                                   text=True, timeout=600)
            ok = ok and again.returncode == 0
            return Outcome(ok and lost == 0, line or out.stderr[-300:],
                           "Traceback" in out.stderr + again.stderr, lost)
        finally:
            subprocess.run(["umount", str(disk)], capture_output=True)
    for fill_at in ("fit:2", "checkpoint:2"):
        attacks.append(Attack("read-only and full disks", f"full disk, resume after {fill_at}",
                              lambda w, f=fill_at: full(w, f)))
    return attacks


# -- 9. exceptions inside the user's env ----------------------------------------------------

ENV_FAULTS = [("RuntimeError", 1), ("RuntimeError", 250), ("RuntimeError", 450),
              ("ValueError", 300), ("KeyError", 300), ("ZeroDivisionError", 300),
              ("AssertionError", 300), ("MemoryError", 300), ("OSError", 300),
              ("IndexError", 300)]


def env_attacks() -> list[Attack]:
    attacks = []
    for exc, after in ENV_FAULTS:
        def run(work: Path, exc=exc, after=after) -> Outcome:
            run_dir = work / "run"
            os.environ["RLHF_TEST_CRASH_AFTER"] = str(after)
            os.environ["RLHF_TEST_CRASH_TYPE"] = exc
            try:
                result = cli("train", "configs/smoke.yaml", "env.id=broken_envs:CrashingEnv",
                             "--run-dir", str(run_dir), "--quiet", *TINY,
                             "loop.total_timesteps=1024")
            finally:
                del os.environ["RLHF_TEST_CRASH_AFTER"], os.environ["RLHF_TEST_CRASH_TYPE"]
            out = refused(result, "CrashingEnv", exc)
            if out.held and run_dir.exists():
                # Once the env is "fixed", the run resumes with every label it had.
                before = labels(run_dir)
                again = cli("train", "--resume", str(run_dir), "--quiet")
                out.labels_lost = len(before - labels(run_dir))
                out.held = again.code == 0 and "resume" in out.detail
                out.traceback = again.traceback
            return out
        attacks.append(Attack("exceptions in the user's env", f"{exc} after {after} steps", run))
    return attacks


# -- 10. kills and SIGTERM (subprocesses, as scripts/fault_injection.py) --------------------


def kill_attacks(rng: random.Random) -> list[Attack]:
    from fault_injection import RUN as FAULT_RUN
    from fault_injection import trial

    attacks = []
    # PPO at every failpoint; SAC (its replay buffer is checkpointed too) where a stop can
    # tear a checkpoint or land between an answer and a fit.
    trials = [("configs/smoke.yaml", kind, 8.0) for kind in (
        "failpoint:ask:2", "failpoint:label:3", "failpoint:fit:2", "failpoint:checkpoint:2",
        "kill", "term")]
    trials += [("configs/smoke_sac.yaml", kind, 20.0) for kind in (
        "failpoint:checkpoint:2", "failpoint:label:3", "kill", "term")]
    for config, kind, duration in trials:
        def run(work: Path, kind=kind, config=config, duration=duration) -> Outcome:
            run_dir = work / "run"
            row = trial(run_dir, kind, rng, duration=duration, config=config)
            ok = row["finished"] and row["labels_lost"] == 0 and row["duplicate_pairs"] == 0
            detail = f"resume exit {row['resume_rc']}"
            if row["resume_rc"] == 2 and not (run_dir / "config.yaml").exists():
                # Stopped before the run existed: nothing to resume or lose; the same
                # command must simply work again (no --force needed).
                again = subprocess.run([sys.executable, "-m", "rlhf.cli", "train",
                                        config, *FAULT_RUN, "--run-dir",
                                        str(run_dir), "--quiet"], cwd=ROOT,
                                       capture_output=True, text=True, timeout=600)
                ok = again.returncode == 0 and row["labels_before"] == 0
                detail = f"stopped before the run existed; started again: exit {again.returncode}"
            return Outcome(ok, detail, bool(row["tracebacks"]), row["labels_lost"])
        agent = "SAC" if "sac" in config else "PPO"
        attacks.append(Attack("kills and SIGTERM", f"{agent} {kind}", run))
    return attacks


# -- 11. property-based: random overrides (hypothesis) ---------------------------------------


def fuzz_attacks(n: int, seed: int) -> list[Attack]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    keys = [k for k, _ in numeric_fields()] + ["env.id", "agent.kwargs", "reward.hidden",
                                               "teacher.kind", "query.strategy", "viewer"]
    values = st.one_of(st.integers(-10**40, 10**40), st.floats(), st.booleans(), st.none(),
                       st.text(max_size=12), st.lists(st.integers(-10**12, 10**12), max_size=3),
                       st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
    seen: list[str] = []
    failures: list[str] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(keys), values), min_size=1, max_size=3))
    def prop(items: list) -> None:
        overrides = [f"{k}={json.dumps(v)}" for k, v in items]
        seen.append(" ".join(overrides))
        try:
            cfg = load_config(overrides=overrides)
        except ConfigError as e:
            if "\n" in str(e) or not str(e):
                failures.append(f"{overrides}: multi-line error")
            return
        except Exception as e:
            failures.append(f"{overrides}: {type(e).__name__}: {e}")
            return
        for key, _ in numeric_fields():  # accepted: every number finite or inf by design
            node: typing.Any = cfg
            for part in key.split("."):
                node = getattr(node, part)
                if node is None:  # an optional section left out (tune, in an RL config)
                    break
            if isinstance(node, float) and math.isnan(node):
                failures.append(f"{overrides}: {key} accepted NaN")

    def run(_: Path) -> Outcome:
        random.seed(seed)
        prop()
        return Outcome(not failures, f"{len(seen)} examples; " + "; ".join(failures[:3]),
                       any("Error" in f for f in failures))
    return [Attack("property-based overrides", f"{n} random override lists", run)]


# -- the suite ------------------------------------------------------------------------------


def make_base(out: Path) -> Path:
    base = out / "base"
    shutil.rmtree(base, ignore_errors=True)
    result = cli("train", "configs/smoke.yaml", "--run-dir", str(base), "--quiet", *TINY)
    if result.code != 0:
        raise SystemExit(f"hostile_input: the base run failed: {result.err}")
    return base


def attacks_for(out: Path, quick: bool, fuzz: int, seed: int) -> list[Attack]:
    """Every attack of the suite; ``quick``: only those that run in this process."""
    attacks = [*config_value_attacks(), *yaml_attacks(out), *override_attacks(),
               *output_attacks(), *damage_attacks(), *force_attacks(), *env_attacks(),
               *fuzz_attacks(fuzz, seed)]
    if not quick:
        attacks += [*concurrent_attacks(), *disk_attacks(), *kill_attacks(random.Random(seed))]
    return attacks


def run_attacks(attacks: list[Attack], out: Path, say: Callable[[str], None] = print
                ) -> list[dict]:
    """Run each attack in a fresh directory under ``out``; one row per attack."""
    rows = []
    for attack in attacks:
        with tempfile.TemporaryDirectory(dir=out) as work:
            try:
                outcome = attack.run(Path(work))
            except Exception as e:
                outcome = Outcome(False, f"suite: {type(e).__name__}: {e}", True)
        rows.append({"class": attack.cls, "attack": attack.name, **dataclasses.asdict(outcome)})
        if not held(rows[-1]):
            say(f"BROKE  {attack.cls}: {attack.name}: {outcome.detail}")
    return rows


def held(row: dict) -> bool:
    return row["held"] and not row["traceback"] and not row["labels_lost"]


def main() -> None:
    global BASE
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="in-process classes only (no subprocess trainers, mounts or kills)")
    p.add_argument("--fuzz", type=int, default=200, help="hypothesis examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/hostile")
    p.add_argument("--json", help="write every attack's outcome here")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    BASE = make_base(out)
    t0 = time.perf_counter()
    rows = run_attacks(attacks_for(out, args.quick, args.fuzz, args.seed), out)
    print(table(rows))
    print(f"\n{len(rows)} attacks in {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(BASE, ignore_errors=True)
    sys.exit(0 if all(held(r) for r in rows) else 1)


def table(rows: list[dict]) -> str:
    classes = list(dict.fromkeys(r["class"] for r in rows))
    lines = ["| class | tried | held | broke | tracebacks | labels lost |",
             "|---|---|---|---|---|---|"]
    total = Counter()
    for c in classes:
        mine = [r for r in rows if r["class"] == c]
        n = Counter(tried=len(mine), held=sum(held(r) for r in mine),
                    tracebacks=sum(r["traceback"] for r in mine),
                    lost=sum(r["labels_lost"] for r in mine))
        n["broke"] = n["tried"] - n["held"]
        total.update(n)
        lines.append(f"| {c} | {n['tried']} | {n['held']} | {n['broke']} | {n['tracebacks']} "
                     f"| {n['lost']} |")
    lines.append(f"| **total** | **{total['tried']}** | **{total['held']}** | "
                 f"**{total['broke']}** | **{total['tracebacks']}** | **{total['lost']}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
