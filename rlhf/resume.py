"""Resuming a run: what may change on the way (``resume_config``), and the components a
script passed by argument, recorded at the start so a resume can ask for them again
(``record_components``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.config import Config, ConfigError
from rlhf.rundir import RunDir

# What a resumed run may change: how it is watched and where it computes, never what it
# learns from (the env, the clips, the budgets and the schedule the checkpoints assume).
RESUME_OVERRIDABLE = ("eval.", "viewer.", "teacher.asynchronous", "teacher.min_new_labels",
                      "teacher.instructions", "reward.device", "reward.threads",
                      "reward.compile", "reward.precision", "reward.relabel")


TUNE_RESUME_OVERRIDABLE = ("viewer.", "teacher.instructions", "tune.comparisons")
"""What a resumed tuning run may change: how it is watched, and how many comparisons in
all (ask for more, or stop sooner)."""


def resume_config(run_dir: str | Path, overrides: list[str] | None = None,
                  overridable: tuple[str, ...] = RESUME_OVERRIDABLE,
                  command: str = "rlhf train") -> Config:
    """The config a run was started with (from its directory), for ``run(resume=True)``.

    Overrides may change only ``overridable`` keys; once the run has restored with them,
    ``run`` writes them into config.yaml, so a second resume sees them too.
    """
    run = RunDir.open(run_dir)
    for item in overrides or []:
        key = item.partition("=")[0].strip()
        if not key.startswith(overridable):
            raise ConfigError(f"{key}: cannot be changed when resuming (the run's clips, "
                              "labels and checkpoints depend on it); start a new run with "
                              f"{command} CONFIG instead")
    cfg = run.load_config(overrides or ())
    cfg.run_dir = str(run_dir)
    return cfg


def record_components(cfg: Config, given: dict[str, Any], resume: bool,
                      entry: str = "run", command: str = "rlhf train") -> None:
    """Write what a script passed to ``run`` by argument into ``cfg.components`` (role ->
    ``module:qualname``), so the run's config.yaml says what it was made with; a resume
    must be given the same roles again (the config's own would silently differ)."""
    passed = {role: _import_path(obj) for role, obj in given.items() if obj is not None}
    if resume:
        missing = sorted(set(cfg.components) - set(passed))
        if missing:
            what = ", ".join(f"{role} {cfg.components[role]}" for role in missing)
            raise ConfigError(f"components: this run was started with a {what} passed by a "
                              f"script; resume it from that script ({entry}(cfg, resume=True, "
                              f"{'=..., '.join(missing)}=...)), not with {command} --resume")
        return
    cfg.components = passed


def _import_path(obj: Any) -> str:
    kind = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{kind.__module__}:{kind.__qualname__}"
