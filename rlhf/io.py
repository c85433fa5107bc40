"""Atomic file writes: write a temporary file in the same directory, fsync, rename into place.

A crash mid-write leaves the previous version of the file intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


class SaveError(RuntimeError):
    """A file could not be written (disk full, permissions); its previous version is intact."""


@contextlib.contextmanager
def saving(path: str | Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a SaveError that says what to do."""
    try:
        yield
    except OSError as e:
        reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise SaveError(f"cannot write {path}: {reason}; its previous version is intact. "
                        "Free some space (or fix the permissions) and resume the run") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    with saving(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
            fsync_dir(path.parent)
        finally:
            tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """Run ``save(tmp_path)`` (e.g. a library's own save) and move the result into place."""
    with atomic_path(path) as tmp:
        save(tmp)


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
