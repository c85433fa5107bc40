"""What ``rlhf check-env`` found: one ``Finding`` a line, gathered in a ``Report``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "info", "warn", "error"]


@dataclass(frozen=True)
class Finding:
    """One line of the report; ``error`` blocks training (or labelling by a person)."""

    level: Level
    check: str
    message: str


@dataclass(frozen=True)
class Report:
    """Everything ``check`` found about one env, in the order the checks ran.

    >>> report = Report("Pendulum-v1", False, (Finding("ok", "make", "PendulumEnv"),), 1.5)
    >>> report.ok
    True
    >>> print(report.format())
    rlhf check-env: Pendulum-v1 (a simulated teacher labels)
      ok    make       PendulumEnv
    rlhf check-env: ready for rlhf train, 0 warnings (1.5 s)
    """

    env_id: str
    person: bool
    """Whether a person labels (frames are required)."""
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warn"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        labels = {"ok": "ok", "info": "info", "warn": "WARN", "error": "ERROR"}
        who = "a person labels: frames needed" if self.person else "a simulated teacher labels"
        lines = [f"rlhf check-env: {self.env_id} ({who})"]
        lines += [f"  {labels[f.level]:<5} {f.check:<10} {f.message}" for f in self.findings]
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = (f"{n_err} blocking problem{'s' * (n_err != 1)}" if n_err
                   else "ready for rlhf train")
        lines.append(f"rlhf check-env: {verdict}, {n_warn} warning{'s' * (n_warn != 1)} "
                     f"({self.seconds:.1f} s)")
        return "\n".join(lines)
