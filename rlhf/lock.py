"""One trainer per run: an OS-level lock on ``RUN_DIR/trainer.lock``, held for the trainer's
life.

Two trainers on one run would both ask queries (more than the budget: extra work for a
person) and race each other's checkpoints. The lock is ``flock(2)`` on an open file: the
kernel drops it when the process ends, however it ends (kill -9 included), so a crash never
leaves a stale lock behind. The file holds the holder's process id, for the message the
second trainer prints. Viewers, ``status``, ``eval`` and ``label`` never take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = "trainer.lock"


class RunLocked(RuntimeError):
    """Another process holds the run's trainer lock."""


class TrainerLock:
    """The trainer lock of the run directory ``directory``; ``acquire`` or refuse.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> first = TrainerLock.acquire(d)
    >>> TrainerLock.acquire(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rlhf.lock.RunLocked: ...: another trainer (process ...) is running this run; ...
    >>> first.release()
    >>> TrainerLock.acquire(d).release()
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str | Path) -> TrainerLock:
        path = Path(directory) / LOCK_NAME
        # O_CLOEXEC (Python's default): a child process started with exec never holds it.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f"process {holder}" if holder else "another process"
            raise RunLocked(f"{directory}: another trainer ({who}) is running this run; wait "
                            "for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> TrainerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    return None
