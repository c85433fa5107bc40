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
          reward_model.safetensors, reward_model.json
          trainer.safetensors, state.json   optimiser, RNG states, progress
      tb/                    TensorBoard logs
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config import Config, ConfigError, save_config
from rlhf.io import atomic_write_text

LATEST = "LATEST"


class RunDirError(RuntimeError):
    """A run directory is missing, incomplete, or would be overwritten."""


class CheckpointError(RunDirError):
    """A checkpoint is missing or corrupt."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM, after saving a checkpoint."""

    def __init__(self, run_dir: Path, checkpointed: bool = True):
        saved = "checkpoint saved" if checkpointed else "labels so far are saved"
        super().__init__(f"interrupted; {saved}. Resume with: rlhf train --resume {run_dir}")
        self.run_dir = run_dir


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def store(self) -> Path:
        return self.path / "store.sqlite"

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
        """The newest complete checkpoint directory (``checkpoints/LATEST``), or None."""
        pointer = self.checkpoints / LATEST
        if not pointer.exists():
            return None
        path = self.checkpoints / pointer.read_text().strip()
        if not (path / "state.json").is_file():
            raise CheckpointError(f"{pointer} names {path.name}, which is incomplete or "
                                  "missing; the run directory was changed outside rlhf")
        return path

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @classmethod
    def create(cls, cfg: Config, force: bool = False) -> RunDir:
        """Make a new run directory and write the resolved config into it.

        Refuses an existing non-empty directory unless ``force``.
        """
        path = Path(cfg.run_dir) if cfg.run_dir else cls.default_path(cfg)
        if path.exists() and any(path.iterdir()) and not force:
            raise RunDirError(f"{path}: run directory already exists; use --resume {path} to "
                              "continue it, or --force to start over there")
        if force and path.exists():  # start over: nothing of the old run may leak in
            for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "status.json",
                         "metrics.csv", "config.yaml"):
                (path / name).unlink(missing_ok=True)
            for name in ("checkpoints", "tb"):
                shutil.rmtree(path / name, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.checkpoints.mkdir(exist_ok=True)
        save_config(cfg, run.config)
        return run

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

    def load_config(self) -> Config:
        from rlhf.config import load_config

        try:
            return load_config(self.config)
        except ConfigError as e:
            raise RunDirError(f"{self.config}: {e}") from None

    def read_status(self) -> dict[str, Any]:
        if not self.status.exists():
            return {}
        return json.loads(self.status.read_text())

    def write_status(self, status: dict[str, Any]) -> None:
        atomic_write_text(self.status, json.dumps(status, indent=2, default=float))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv whole (atomically); rows may gain keys over time."""
        keys: list[str] = []
        for row in rows:
            keys.extend(k for k in row if k not in keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics, buf.getvalue())

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.csv rows, numbers parsed (an empty cell is NaN)."""
        if not self.metrics.exists():
            return []
        with open(self.metrics, newline="") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str) -> Any:
    if text == "":
        return math.nan
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
