"""SQLite errors on the store made into one-line ``StoreError``s that say what is wrong and
what to do (``diagnose``), and the two places they are caught: ``_guarded`` store methods and
``_Transaction``. ``rlhf.store`` imports and re-exports these; this module imports nothing
of the store, so there is no import cycle.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, Protocol, TypeVar

from rlhf.io import free_bytes, read_only_fs


class StoreError(RuntimeError):
    """The store cannot be opened or used as asked; the message says why and what to do."""


class StoreUnavailable(StoreError):
    """The store's server cannot be reached now (stopped, restarting, the network): nothing
    was changed, and the same call may work once it is back."""


# SQLite's primary result codes (an error's extended code & 0xFF).
SQLITE_ERROR, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 1, 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26
SQLITE_READONLY_DBMOVED = 1032


def diagnose(path: Path, e: sqlite3.Error, doing: Literal["open", "read", "write"]) -> str:
    """One line: what an SQLite error on the store at ``path`` means, and what to do.

    Classified by SQLite's result code, not its wording ("database disk image is
    malformed" is damage, not a disk problem), and, where SQLite cannot tell (it cannot
    open a file), by the file system itself: free space, write permission, a read-only
    mount. Only real damage is told to restore from a copy.
    """
    extended = getattr(e, "sqlite_errorcode", None) or 0
    code = extended & 0xFF
    detail = " ".join(str(e).split())
    writing = doing == "write"
    kept = ("nothing of this change was written, earlier labels are intact" if writing
            else "the store is not damaged by it")
    unreachable = code in (SQLITE_CANTOPEN, SQLITE_IOERR)
    if code == SQLITE_FULL or (unreachable and _low_space(path)):
        return f"{path}: the disk is full ({detail}); {kept}. Free some space and try again"
    if extended == SQLITE_READONLY_DBMOVED:
        return (f"{path} was moved, replaced or deleted while rlhf had it open ({detail}); "
                f"{kept if writing else 'nothing was written'}. Put it back and try again")
    if code == SQLITE_READONLY or (unreachable and not (_writable(path)
                                                         and _writable(path.parent))):
        if path.exists() and not os.access(path, os.R_OK):
            return (f"{path} cannot be read (permission denied); make it readable "
                    f"(chmod u+r {path}) and try again")
        return _read_only(path)
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        what = "not an SQLite database" if code == SQLITE_NOTADB else "truncated or damaged"
        return (f"{path} is corrupt ({detail}: {what}); restore it from a copy (or try: "
                f"sqlite3 {path} .recover)")
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return (f"{path} is locked by another process ({detail}); "
                f"{kept if writing else 'nothing was changed'}. Try again when it is done")
    if code == SQLITE_IOERR:
        return (f"{path}: the disk reported an I/O error ({detail}); check the disk (dmesg) "
                "before you delete or restore anything, then try again")
    if code == SQLITE_CANTOPEN:
        return (f"{path}: cannot open the store ({detail}); check that it is a file you may "
                "read and write")
    if code == SQLITE_ERROR and "no such" in detail:
        return (f"{path} is not a complete rlhf store ({detail}): it is corrupt or was "
                "changed outside rlhf; restore it from a copy")
    if writing:
        return f"{path}: could not save to the store ({detail}); {kept}"
    return f"{path}: {'cannot open the store' if doing == 'open' else 'the store failed'} " \
           f"({detail})"


def _writable(path: Path) -> bool:
    """Whether this process may write ``path`` (an existing one): False on a read-only
    mount too, even for root."""
    return os.access(path, os.W_OK) and not read_only_fs(path)


def _low_space(path: Path) -> bool:
    free = free_bytes(path)
    return free is not None and free < 1 << 20


def _read_only(path: Path) -> str:
    if read_only_fs(path):
        return (f"{path} is read-only (a read-only file system): the store cannot take new "
                "labels; remount it read-write or copy the run to a writable disk")
    return (f"{path} is read-only: the store cannot take new labels; make it writable "
            f"(chmod u+w {path.parent} {path}) or copy the run")


class _OnStore(Protocol):
    path: object  # the store's file (a Path) or PostgreSQL location, named in the message


_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound=_OnStore)


def _guarded(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """A database error in a store method (damage found on a query, a failing disk, a
    server gone) becomes a one-line StoreError, as it would at the open; a misuse of
    sqlite3 or psycopg stays a bug.

    A store with a ``retry`` policy (the trainer's) calls a method again while its server
    cannot be reached, until the policy's time is up; only the outermost store call
    retries, and only once its transaction is over (rolled back: nothing half-written)."""

    @functools.wraps(method)
    def wrapper(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        policy: RetryPolicy | None = getattr(self, "retry", None)
        if policy is None or policy.depth:
            return _converted(method, self, *args, **kwargs)
        policy.depth += 1
        try:
            while True:
                try:
                    result = _converted(method, self, *args, **kwargs)
                except StoreUnavailable as e:
                    policy.wait(e)  # raises once the time is up
                    continue
                policy.recovered()
                return result
        finally:
            policy.depth -= 1
            policy.since = None  # whatever ended the call ended the outage it was in

    return wrapper


class RetryPolicy:
    """How long a store keeps trying while its server cannot be reached (``store.
    retry_seconds``), with a growing pause between tries (0.5 s doubling up to 10 s), and
    a line to ``log`` when it starts waiting and when the server is back."""

    def __init__(self, seconds: float, log: Callable[[str], None],
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None):
        import time

        self.seconds, self.log = seconds, log
        self.clock, self.sleep = clock or time.monotonic, sleep or time.sleep
        self.depth = 0
        self.since: float | None = None
        self.pause = 0.5

    def wait(self, e: StoreUnavailable) -> None:
        now = self.clock()
        if self.since is None:
            self.since, self.pause = now, 0.5
            if self.seconds > 0:
                self.log(f"rlhf: {e}; retrying for up to {self.seconds:g} s")
        waited = now - self.since
        if waited + self.pause > self.seconds:
            self.since = None
            if self.seconds <= 0:
                raise e
            raise StoreUnavailable(f"{e}; gave up after {waited:.0f} s of retrying "
                                   "(store.retry_seconds)") from None
        self.sleep(self.pause)
        self.pause = min(2 * self.pause, 10.0)

    def recovered(self) -> None:
        if self.since is not None:
            self.log(f"rlhf: the store is back after {self.clock() - self.since:.0f} s; "
                     "carrying on")
            self.since = None


def _converted(method: Callable[Concatenate[_S, _P], _R], self: _S, *args: _P.args,
               **kwargs: _P.kwargs) -> _R:
    """``method``'s call, with database errors made into one-line StoreErrors."""
    try:
        return method(self, *args, **kwargs)
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.ProgrammingError):
            raise
        raise StoreError(diagnose(self.path, e, "read")) from None  # type: ignore[arg-type]
    except Exception as e:
        from rlhf.store_pg import is_store_error, store_error  # imports this module

        if not is_store_error(e):
            raise
        raise store_error(self.path, e, "read") from None  # type: ignore[arg-type]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error) on an autocommit connection.

    A database error (a full disk, a locked or damaged file) rolls the transaction back
    and becomes a StoreError: the store keeps everything committed before it.
    """

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db, self.path = db, path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise StoreError(diagnose(self.path, e, "write")) from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.DatabaseError as e:
            with contextlib.suppress(sqlite3.DatabaseError):
                self.db.execute("ROLLBACK")
            raise StoreError(diagnose(self.path, e, "write")) from None
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc,
                                                                     sqlite3.ProgrammingError):
            raise StoreError(diagnose(self.path, exc, "write")) from None
