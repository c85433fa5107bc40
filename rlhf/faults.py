"""Failpoints: places where a test can kill the process to prove nothing is lost.

Set ``RLHF_FAILPOINT=name`` (or ``name:N`` for the N-th time that point is reached) in a
training process's environment and it SIGKILLs itself there — no cleanup, no handlers, as
a power cut or the OOM killer would. Unset (always, outside tests) each call is one dict
lookup of a module constant.

Points: ``ask`` (clips stored, queries not yet), ``label`` (in the middle of a teacher's
batch of labels), ``fit`` (in the middle of reward-model fitting), ``checkpoint`` (half of
a checkpoint's files written).
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("RLHF_FAILPOINT", "")
_NAME, _, _COUNT = _SPEC.partition(":")
_hits = 0


def failpoint(name: str) -> None:
    global _hits
    if not _SPEC or name != _NAME:
        return
    _hits += 1
    if _hits >= int(_COUNT or 1):
        os.kill(os.getpid(), signal.SIGKILL)
