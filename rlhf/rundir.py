"""The run directory: everything needed to inspect, label, evaluate or resume a run.

::

    RUN_DIR/
      config.yaml            the resolved config
      store.sqlite           clips, queries, labels (shared with viewers)
      status.json            progress: timesteps, iteration, latest return and accuracy
      metrics.csv            one row per iteration
      checkpoints/
        LATEST               the name of the newest complete checkpoint
        it-NNNNN-TTTTTTTTTT/ after iteration N at T timesteps (the two newest are kept):
          policy.zip         SB3's own format, loaded parameters-only
          obs_rms.npz        observation normalisation (if used)
          replay.zip         an off-policy agent's replay buffer, as arrays (no pickle)
          reward_model.safetensors, reward_model.json
          trainer.safetensors, state.json   optimiser, RNG states, progress
      tb/                    TensorBoard logs
      best.json, utility.png a tuning run's recommendation and estimated utility (rlhf tune)
      trainer.lock           held (flock) by the one trainer of this run while it runs

status.json and metrics.csv are written and read by ``rlhf.run_files``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf import run_files
from rlhf.config import Config, ConfigError, config_yaml, save_config
from rlhf.io import saving
from rlhf.lock import LOCK_NAME, TrainerLock

if TYPE_CHECKING:
    from rlhf.store_pg import PgLocation

LATEST = "LATEST"
STATE, TRAINER = "state.json", "trainer.safetensors"
POLICY, OBS_RMS, REPLAY = "policy.zip", "obs_rms.npz", "replay.zip"
"""A checkpoint's files, named once (the reward model's are in rlhf.reward.model): the
checkpoint module writes the first two, the agent the others."""
RUN_FILES = frozenset({"config.yaml", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm",
                       "store.sqlite-journal", "status.json", "metrics.csv", "checkpoints",
                       "tb", LOCK_NAME, "best.json", "utility.png"})
"""Everything rlhf writes in a run directory (``--force`` touches nothing else)."""
_CHECKPOINT_ENTRY = re.compile(r"LATEST|it-\d{5}-\d{10}|\.(tmp|old)-[0-9a-f]{8}|"
                               r"\.LATEST\..*\.tmp")
_TB_ENTRY = re.compile(r"events\.out\.tfevents\..+")


class RunDirError(RuntimeError):
    """A run directory is missing, incomplete, or would be overwritten."""


class CheckpointError(RunDirError):
    """A checkpoint is missing or corrupt."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM, after saving a checkpoint."""

    def __init__(self, run_dir: Path, checkpointed: bool = True, command: str = "rlhf train"):
        saved = "checkpoint saved" if checkpointed else "labels so far are saved"
        super().__init__(f"interrupted; {saved}. Resume with: {command} --resume {run_dir}")
        self.run_dir = run_dir


def sigterm_raises_interrupt() -> Any:
    """Make SIGTERM behave like Ctrl-C (main thread only); returns the previous handler."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return signal.getsignal(signal.SIGTERM)


def reserve_store(cfg: Config) -> None:
    """A new run whose store is on a PostgreSQL server (``store.url``): fix its name there
    (``store.run``, saved with the config) and make its tables, before the run directory
    exists: an unreachable server, or a name another run's labels already use, is refused
    with nothing written. Nothing to do for an SQLite store."""
    if cfg.store.url is None:
        return
    from rlhf.store import Store
    from rlhf.store_pg import PgLocation

    if cfg.run_dir is None:
        cfg.run_dir = str(RunDir.default_path(cfg))
    if cfg.store.run is None:
        cfg.store.run = pg_run_name(Path(cfg.run_dir))
    location = PgLocation(cfg.store.url, cfg.store.run)
    with Store(location, create=True) as store:
        counts = store.counts()
        if counts.clips or counts.label_events:  # an empty one: this run's aborted start
            raise RunDirError(f"{location} already holds another run's {counts.clips} clips "
                              f"and {counts.labels} labels; resume that run (rlhf train "
                              "--resume DIR), or give this one another name: store.run=NAME")
        # What a viewer on another machine needs (env, viewer, instructions), from the
        # store alone: rlhf label URL --run NAME.
        store.put_meta("config", config_yaml(cfg))


def pg_run_name(path: Path) -> str:
    """A run directory's name as a run name on a PostgreSQL server (``store.run``'s
    default): the characters a run name may not hold become ``_``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.resolve().name)[:50].lstrip("_.-")
    return name or "run"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def store(self) -> Path:
        """The SQLite store's file (the default backend)."""
        return self.path / "store.sqlite"

    def store_location(self, cfg: Config | None = None) -> Path | PgLocation:
        """Where this run's store is: ``store.sqlite`` here, or, with ``store.url`` in the
        run's config (``cfg``, default: its config.yaml), its run on a PostgreSQL server."""
        from rlhf.store_pg import PgLocation

        cfg = self.load_config() if cfg is None else cfg
        if cfg.store.url is None:
            return self.store
        return PgLocation(cfg.store.url, cfg.store.run or pg_run_name(self.path))

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint directory (``checkpoints/LATEST``), or None.

        LATEST must name a directory inside ``checkpoints/``: a damaged pointer, or one that
        leads out of it (``..``, an absolute path, a symlink), is a CheckpointError naming
        it, and is never followed.
        """
        pointer = self.checkpoints / LATEST
        if not pointer.exists() and not pointer.is_symlink():
            return None
        root = self.checkpoints.resolve()

        def refuse(problem: str) -> CheckpointError:
            # The way out that loses nothing: point LATEST at a complete checkpoint.
            complete = sorted(p.name for p in self.checkpoints.glob("it-*") if not
                              p.is_symlink() and (p / STATE).is_file())
            fix = (f"write the newest complete checkpoint's name, {complete[-1]}, into it"
                   if complete else "no complete checkpoint is left to point it at")
            return CheckpointError(f"{pointer} {problem}; {fix}")

        if pointer.resolve().parent != root:
            raise refuse(f"is a link to {pointer.resolve()}, outside {self.checkpoints}; "
                         "refused")
        try:
            name = pointer.read_bytes().decode("utf-8").strip()
        except UnicodeDecodeError:
            raise refuse("is damaged (binary bytes, not a checkpoint's name)") from None
        except OSError as e:
            raise refuse(f"cannot be read ({e.strerror or e})") from None
        if not name:
            raise refuse("is empty (it should name a checkpoint directory)")
        if any(c in name for c in "/\\") or name in (".", "..") or not name.isprintable() \
                or len(name) > 255:
            raise refuse(f"names {name[:80]!r}, which is not a directory in "
                         f"{self.checkpoints}; refused")
        path = self.checkpoints / name
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise refuse(f"names {name}, a link to {path.resolve()} outside "
                         f"{self.checkpoints}; refused")
        if not (path / STATE).is_file():
            raise refuse(f"names {name}, which is incomplete or missing (the run directory "
                         "was changed outside rlhf)")
        return path

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @classmethod
    def create(cls, cfg: Config, force: bool = False,
               say: Callable[[str], None] = print) -> tuple[RunDir, TrainerLock]:
        """Make a new run directory, take its trainer lock, write the resolved config.

        Refuses an existing non-empty directory unless ``force``; ``force`` replaces only a
        directory that is provably an rlhf run (``replace_run``), never one a trainer holds.
        """
        path = Path(cfg.run_dir) if cfg.run_dir else cls.default_path(cfg)
        if path.is_dir() and cls(path).aborted_start():
            # A trainer killed in its first moments left only its lock (and an empty
            # checkpoints/): nothing to resume or lose, so the directory counts as empty.
            with cls(path).lock(), saving(path):  # refused if that trainer still runs
                if (path / "checkpoints").is_dir():
                    (path / "checkpoints").rmdir()
                (path / LOCK_NAME).unlink(missing_ok=True)
        if path.is_dir() and any(path.iterdir()):
            if not force:
                raise RunDirError(f"{path}: run directory already exists; use --resume {path} "
                                  "to continue it, or --force to start over there")
            cls(path).replace_run(say)
        elif (path.exists() or path.is_symlink()) and not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a directory; give another --run-dir")
        with saving(path):
            path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        lock = run.lock()
        try:
            with saving(run.checkpoints):
                run.checkpoints.mkdir(exist_ok=True)
            save_config(cfg, run.config)
        except BaseException:
            lock.release()
            raise
        return run, lock

    def aborted_start(self) -> bool:
        """Whether this directory holds only what a trainer killed before writing its
        config leaves: its lock file and an empty checkpoints/ (or less)."""
        entries = {p.name for p in self.path.iterdir()}
        if not entries or not entries <= {LOCK_NAME, "checkpoints"}:
            return False
        return not (self.checkpoints.is_dir() and any(self.checkpoints.iterdir()))

    def lock(self) -> TrainerLock:
        """The run's trainer lock (``rlhf.lock``); ``RunLocked`` names the holder's pid."""
        try:
            return TrainerLock.acquire(self.path)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise RunDirError(f"{self.path} is read-only: a trainer cannot continue it "
                                  "(status, eval and label --screenshot still can); make it "
                                  "writable, or copy the run and resume the copy") from None
            with saving(self.path / LOCK_NAME):
                raise

    def replace_run(self, say: Callable[[str], None] = print) -> None:
        """``rlhf train --force``: clear this run directory for a new run, or refuse.

        Only a directory that is provably an rlhf run is touched: its config.yaml loads as
        an rlhf config and it holds nothing but what rlhf writes (``RUN_FILES``). No trainer
        may hold it. Labels a person gave are never deleted: such a run is moved aside whole
        (``DIR.replaced-<time>``); a run whose labels all came from its simulated teacher
        (which answers the same way again) is removed. Says what it removed or moved.
        """
        strangers = self._strangers()
        if not self.config.is_file() or strangers:
            what = f"holds {', '.join(strangers[:3])}" if strangers else "has no config.yaml"
            raise RunDirError(f"{self.path}: not an rlhf run directory (it {what}); --force "
                              "replaces only a run's own files: give another --run-dir")
        try:
            cfg = self.load_config()
        except RunDirError:
            raise RunDirError(f"{self.path}: not an rlhf run directory (its config.yaml is not "
                              "an rlhf config); --force replaces only a run's own files: give "
                              "another --run-dir") from None
        with self.lock():  # a live trainer keeps its run
            person = self._labels_by_a_person(cfg)
            if person:
                aside = self.path.with_name(
                    f"{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                with saving(aside):
                    self.path.rename(aside)
                say(f"rlhf: --force: moved the previous run ({person} labels given by a "
                    f"person) to {aside}; delete it yourself once you no longer need them")
                return
            removed = [name for name in sorted(RUN_FILES) if (self.path / name).exists()
                       and name != LOCK_NAME]
            with saving(self.path):
                for name in removed:
                    target = self.path / name
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    else:
                        target.unlink()
        say(f"rlhf: --force: removed the previous run's {', '.join(removed)} from {self.path}")

    def _strangers(self) -> list[str]:
        """Entries rlhf would not have written: anything outside ``RUN_FILES``, in
        ``checkpoints/`` anything but LATEST and checkpoint (or crash-leftover) directories,
        in ``tb/`` anything but TensorBoard event files."""
        found = [p.name for p in self.path.iterdir() if p.name not in RUN_FILES]
        for sub, ours in ((self.checkpoints, _CHECKPOINT_ENTRY), (self.tensorboard, _TB_ENTRY)):
            if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
                found.append(sub.name)
            elif sub.is_dir():
                found += [f"{sub.name}/{p.name}" for p in sub.iterdir()
                          if not ours.fullmatch(p.name) or p.is_symlink()]
        return sorted(found)

    def _labels_by_a_person(self, cfg: Config) -> int:
        """Standing labels in the store not given by the run's own simulated teacher."""
        from rlhf.store import Store

        if cfg.store.url is not None or not self.store.exists():
            return 0  # labels on a server stay there whatever happens to this directory
        simulated = None if cfg.teacher.kind == "human" else cfg.teacher.kind
        with Store(self.store, readonly=True) as store:
            return sum(1 for label in store.labels() if label.teacher != simulated)

    def check_store(self) -> None:
        """Before a trainer opens the store: a run with checkpoints must have it.

        A missing, empty or dangling-symlink store.sqlite would otherwise be created anew,
        empty, and the run could never resume its labels.
        """
        if self.load_config().store.url is not None:
            return  # on a server: opening it finds the run there, or says it is not
        store = self.store
        dangling = store.is_symlink() and not store.exists()
        has_checkpoint = (self.checkpoints / LATEST).exists() or self.metrics.exists()
        if dangling:
            raise RunDirError(f"{store} is a symlink to {os.readlink(store)}, which does not "
                              "exist; restore the store there (or the link), then resume")
        if has_checkpoint and (not store.is_file() or store.stat().st_size == 0):
            state = "empty" if store.is_file() else "missing"
            raise RunDirError(f"{store} is {state}, but the run has checkpoints and metrics "
                              "that depend on its labels; restore store.sqlite from a copy, or "
                              "start a new run elsewhere")

    @staticmethod
    def default_path(cfg: Config) -> Path:
        """``runs/<name>-s<seed>-<YYYYmmdd-HHMMSS>``."""
        return Path("runs") / f"{cfg.name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(Path(path))
        if not run.config.is_file():
            raise RunDirError(f"{path}: not a run directory (no config.yaml)")
        return run

    def load_config(self, overrides: Sequence[str] = ()) -> Config:
        """The run's config.yaml, then ``key.path=value`` overrides: the one way to open a
        run's config. A damaged file is a RunDirError naming it; a bad override stays the
        override's ConfigError (the file is fine)."""
        from rlhf.config import load_config

        try:
            cfg = load_config(self.config)
        except ConfigError as e:
            raise RunDirError(f"{self.config}: {e}") from None
        return load_config(self.config, list(overrides)) if overrides else cfg

    def read_status(self) -> dict[str, Any]:
        """status.json, or {} when there is none yet (``rlhf.run_files.read_status``)."""
        return run_files.read_status(self.status)

    def write_status(self, status: dict[str, Any]) -> None:
        run_files.write_status(self.status, status)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv whole (atomically); rows may gain keys over time."""
        run_files.write_metrics(self.metrics, rows)

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.csv rows, numbers parsed (``rlhf.run_files.read_metrics``)."""
        return run_files.read_metrics(self.metrics)
