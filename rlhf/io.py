"""Atomic file writes: write a temporary file in the same directory, fsync, rename into place.

A crash mid-write leaves the previous version of the file intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from safetensors import SafetensorError


class SaveError(RuntimeError):
    """A file could not be written (disk full, permissions); its previous version is intact.

    ``reason`` is the cause alone (e.g. "the disk is full"), for a caller that words the
    message for a bigger whole (a checkpoint).
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


DISK_FULL = "the disk is full"
_FULL_WORDS = ("no space left on device", "os error 28", "disk is full", "disk quota exceeded",
               "os error 122")
# Errors a library raises for a failed write without saying why (torch's zip writer says
# "unexpected pos 576 vs 534"); such an error with no space left on the disk is the disk.
_OPAQUE = (RuntimeError, SafetensorError)
_LOW_SPACE = 1 << 20  # bytes: less than one write buffer


def free_bytes(path: str | Path) -> int | None:
    """Free space on the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    # Root may write into the blocks reserved for it; anyone else may not.
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def read_only_fs(path: str | Path) -> bool:
    """Whether ``path`` (or its nearest existing parent) is on a read-only mount."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return bool(os.statvfs(p).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def write_failure(e: BaseException, path: str | Path) -> str | None:
    """Why writing ``path`` failed, when the cause is the disk or the file system (a short
    reason such as "the disk is full"); None for anything else (a bug keeps its traceback).

    Call it before cleaning up the failed write: the free space it checks is then still
    taken by the partial file.
    """
    for err in _chain(e):
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return DISK_FULL if err.errno == errno.ENOSPC else "the disk quota is exceeded"
        if isinstance(err, OSError) and err.errno == errno.EROFS:
            return "the file system is read-only"
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if isinstance(err, (OSError, *_OPAQUE)) and any(w in str(err).lower()
                                                         for w in _FULL_WORDS):
            return DISK_FULL
    if isinstance(e, _OPAQUE):
        free = free_bytes(path)
        return DISK_FULL if free is not None and free < _LOW_SPACE else None
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return None


def fix_for(reason: str) -> str:
    """What to do about a ``write_failure`` reason."""
    if reason == DISK_FULL or "quota" in reason:
        return "Free some space and resume the run"
    if "read-only" in reason:
        return "Remount it read-write (or copy the run to a writable disk) and resume the run"
    if reason == "permission denied":
        return "Fix the permissions (chmod u+w) and resume the run"
    return "Check the disk (or free some space) and resume the run"


def save_error(e: BaseException, path: str | Path,
               intact: str = "its previous version is intact") -> SaveError | None:
    """``e`` as a SaveError naming ``path``, when the disk caused it (``write_failure``)."""
    if isinstance(e, SaveError):
        return e
    reason = write_failure(e, path)
    if reason is None:
        return None
    return SaveError(f"cannot write {path}: {reason}; {intact}. {fix_for(reason)}", reason)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """One line on stderr (``rlhf: warning: ...``), once per process: for damaged derived
    files (status.json, metrics.csv) that readers ignore rather than stop at, and which a
    viewer re-reads every second."""
    if message not in _warned:
        _warned.add(message)
        print(f"rlhf: warning: {message}", file=sys.stderr)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    err: BaseException | None = e
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


@contextlib.contextmanager
def saving(path: str | Path, intact: str = "its previous version is intact") -> Iterator[None]:
    """Turn a failure of the disk while writing ``path`` (an OSError, or a library's own error
    whose cause is a full disk) into a SaveError that says what to do."""
    try:
        yield
    except Exception as e:
        error = save_error(e, path, intact)
        if error is None or error is e:
            raise
        raise error from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    with saving(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # After the write: a library may have replaced the file with one of its own mode
        # (safetensors makes 0600); mkstemp makes 0600 too. Give the usual mode.
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except Exception as e:
        error = save_error(e, path)  # before the cleanup frees the partial file's space
        tmp_path.unlink(missing_ok=True)
        if error is None or error is e:
            raise
        raise error from None
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
