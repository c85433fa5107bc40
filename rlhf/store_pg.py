"""The store on a PostgreSQL server: where a run's tables live there, the connection the
``Store`` runs its SQL on, its transactions, and its errors as one line each.

One PostgreSQL schema per run (``rlhf_<run>``), so the store's SQL is the same on both
backends: the connection sets ``search_path`` to the run's schema and turns SQLite's ``?``
placeholders into psycopg's ``%s``. A write transaction first takes a transaction-scoped
advisory lock on the run, which serialises writers exactly as SQLite's ``BEGIN IMMEDIATE``
does: a viewer's check-then-claim and check-then-answer stay atomic across machines.

Credentials come from the URL given on a command line, from libpq's environment
(``PGPASSWORD``, ``PGUSER``...) or its password file (``~/.pgpass``); messages and saved
configs only ever show the URL without its password. psycopg is imported when a PostgreSQL
store is opened, not with ``rlhf.store``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from rlhf.store_errors import StoreError, StoreUnavailable

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,49}")
SCHEMES = ("postgresql", "postgres")


def is_url(location: object) -> bool:
    """Whether a store location is a PostgreSQL URL (``postgresql://...``)."""
    return isinstance(location, str) and location.split("://", 1)[0] in SCHEMES \
        and "://" in location


def without_password(url: str) -> str:
    """``url`` with any password taken out (for messages, logs and saved configs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))


def has_password(url: str) -> bool:
    return urlsplit(url).password is not None


@dataclass(frozen=True)
class PgLocation:
    """A run's store on a PostgreSQL server: the server's URL and the run's name there.

    ``str()`` is what messages show: the URL without its password, and the run.
    """

    url: str
    run: str

    def __post_init__(self) -> None:
        if not is_url(self.url):
            raise StoreError(f"{self.url!r} is not a PostgreSQL URL; write "
                             "postgresql://USER@HOST:PORT/DATABASE")
        if not RUN_NAME.fullmatch(self.run):
            raise StoreError(f"run name {self.run!r} cannot name a run on a PostgreSQL "
                             "server: use 1-50 letters, digits, '_', '.' or '-', starting "
                             "with a letter or digit")

    @property
    def schema(self) -> str:
        """The run's PostgreSQL schema (its tables live there): the name as it is, always
        double-quoted in SQL, so no two runs' names map to one schema."""
        return "rlhf_" + self.run

    def __str__(self) -> str:
        return f"{without_password(self.url)} (run {self.run})"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("a PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'"
                         ) from None
    return psycopg


@functools.lru_cache(maxsize=512)
def _to_pg(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (the store's SQL has no literal
    ``%`` or ``?`` otherwise)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _lock_key(schema: str) -> int:
    """A signed 64-bit advisory-lock key for a run's schema."""
    return int.from_bytes(hashlib.blake2b(schema.encode(), digest_size=8).digest(), "big",
                          signed=True)


def describe(location: PgLocation, e: BaseException,
             doing: Literal["open", "read", "write"]) -> str:
    """One line: what a psycopg error on ``location`` means, and what to do."""
    psycopg = sys.modules["psycopg"]
    detail = " ".join(str(e).split()) or type(e).__name__
    kept = ("nothing of this change was written, earlier labels are intact"
            if doing == "write" else "nothing was changed")
    if isinstance(e, psycopg.errors.DiskFull):
        return f"{location}: the server's disk is full ({detail}); {kept}"
    if connection_lost(e):
        if doing == "open":
            parts = urlsplit(location.url)
            server = f"{parts.hostname or 'the local socket'}:{parts.port or 5432}"
            return (f"cannot reach the PostgreSQL server at {server} for {location} "
                    f"({detail}); start it, or fix the URL (password: PGPASSWORD or "
                    "~/.pgpass)")
        return (f"{location}: lost the connection to the PostgreSQL server ({detail}); "
                f"{kept}. Once the server is back, the next try reconnects")
    if isinstance(e, psycopg.errors.InsufficientPrivilege):
        return (f"{location}: the database user may not do this ({detail}); grant it "
                "the rights on the run's schema, or use another user")
    if isinstance(e, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
        return (f"{location} is not a complete rlhf store ({detail}): it was changed "
                "outside rlhf; restore it from a backup")
    return f"{location}: the store failed ({detail}); {kept}"


def store_error(location: PgLocation, e: BaseException,
                doing: Literal["open", "read", "write"]) -> StoreError:
    """``describe``'s line as the error to raise: ``StoreUnavailable`` when the server cannot
    be reached (worth trying again later), else a ``StoreError``."""
    return (StoreUnavailable if transient(e) else StoreError)(describe(location, e, doing))


# SQLSTATEs of a server going away: class 08 (connection exceptions) and the shutdowns.
_GONE = ("08", "57P01", "57P02", "57P03")


def connection_lost(e: BaseException) -> bool:
    """Whether ``e`` says the server cannot be reached (worth trying again once it is
    back): a connection failure (libpq's have no SQLSTATE) or a server shutting down; not
    an error the server gave and would give again (a full disk, a cancelled statement)."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(e, psycopg.OperationalError):
        return False
    state = getattr(e, "sqlstate", None)
    return state is None or state.startswith(_GONE)


_CONTENDED = ("55P03", "40001", "40P01")  # a lock wait timed out; a serialization failure


def transient(e: BaseException) -> bool:
    """Whether the same call may work if tried again later, nothing having been written:
    the server is away (``connection_lost``) or the transaction lost a race for a lock."""
    return connection_lost(e) or getattr(e, "sqlstate", None) in _CONTENDED


def is_store_error(e: BaseException) -> bool:
    """Whether ``e`` is a psycopg error about the server or its data (not a misuse of
    psycopg, which stays a bug)."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(e, psycopg.Error) \
        and not isinstance(e, psycopg.ProgrammingError | psycopg.InterfaceError)


class PgConnection:
    """A psycopg connection to one run's schema with the small part of sqlite3's connection
    API that the store uses (``execute`` with ``?`` placeholders, ``executemany``).

    Outside a transaction, a connection the server dropped is opened again on the next
    statement, so a trainer or viewer carries on once a restarted server is back.
    """

    def __init__(self, location: PgLocation, timeout: float = 30.0, readonly: bool = False):
        self.location = location
        self.timeout = timeout
        self.readonly = readonly
        self.key = _lock_key(location.schema)
        self.in_transaction = False
        self.conn = self._connect()

    def _connect(self) -> Any:
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self.location.url, autocommit=True,
                                   connect_timeout=max(1, int(min(self.timeout, 10))),
                                   application_name="rlhf")
        except psycopg.Error as e:
            raise store_error(self.location, e, "open") from None
        # A lock wait longer than the timeout is an error, as SQLite's busy timeout is.
        conn.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        conn.execute(f'SET search_path TO "{self.location.schema}"')
        if self.readonly:  # a reader (rlhf status) cannot change the run by mistake
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _live(self) -> Any:
        if not self.in_transaction and (self.conn.closed or self.conn.broken):
            self.conn = self._connect()
        return self.conn

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        conn = self._live()
        try:
            return conn.execute(_to_pg(sql), tuple(params))
        except sys.modules["psycopg"].OperationalError:
            if self.in_transaction:
                raise  # the transaction is lost: its caller says so, nothing half-written
            # A statement of its own (a read: every write is in a transaction): the server
            # dropped this connection, perhaps restarted since; try once on a new one.
            self.close()
            return self._live().execute(_to_pg(sql), tuple(params))

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        with self._live().cursor() as cur:
            cur.executemany(_to_pg(sql), rows)

    def has_table(self, name: str) -> bool:
        row = self.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = ? "
                           "AND table_name = ?", (self.location.schema, name)).fetchone()
        return row is not None

    def has_schema(self) -> bool:
        row = self.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = ?",
                           (self.location.schema,)).fetchone()
        return row is not None

    def runs(self) -> list[str]:
        """The rlhf runs on this server's database (their schemas, without the prefix)."""
        rows = self.execute("SELECT schema_name FROM information_schema.schemata WHERE "
                            "schema_name LIKE 'rlhf\\_%' ORDER BY schema_name").fetchall()
        return [r[0][len("rlhf_"):] for r in rows]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class PgTransaction:
    """BEGIN, the run's advisory lock, ... COMMIT (ROLLBACK on error); a database error
    becomes a StoreError and the store keeps everything committed before it."""

    def __init__(self, db: PgConnection):
        self.db = db
        self._tx: Any = None
        self.xid: int | None = None

    def __enter__(self) -> None:
        try:
            self._tx = self.db._live().transaction()
            self._tx.__enter__()
            self.db.in_transaction = True
            # The transaction's id too: should the connection drop during COMMIT, the
            # server can say afterwards whether it committed (no write done twice).
            self.xid = self.db.conn.execute("SELECT txid_current() FROM (SELECT "
                                            "pg_advisory_xact_lock(%s)) lock",
                                            (self.db.key,)).fetchone()[0]
        except Exception as e:
            self._end(type(e), e, None)
            if is_store_error(e):
                raise store_error(self.db.location, e, "write") from None
            raise

    def _committed_after_all(self, e: BaseException) -> bool:
        """The connection was lost during COMMIT: ask the server (on a new connection)
        whether the transaction committed. False: it did not (a retry is safe). A server
        still away leaves it unknown: a StoreError, which nothing retries."""
        self.db.close()
        try:
            row = self.db._live().execute("SELECT txid_status(%s)", (self.xid,)).fetchone()
        except Exception:
            raise StoreError(f"{self.db.location}: the connection to the PostgreSQL server "
                             f"was lost while committing ({' '.join(str(e).split())}); "
                             "whether this change was saved is known once the server is "
                             "back: check, then resume") from None
        return row is not None and row[0] == "committed"

    def _end(self, exc_type: Any, exc: Any, tb: Any) -> None:
        tx, self._tx = self._tx, None
        self.db.in_transaction = False
        if tx is not None:
            tx.__exit__(exc_type, exc, tb)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._end(exc_type, exc, tb)
        except Exception as e:
            if exc_type is None and connection_lost(e) and self._committed_after_all(e):
                return  # the server committed; only its answer was lost
            if is_store_error(e):
                raise store_error(self.db.location, e, "write") from None
            raise
        if exc is not None and is_store_error(exc):
            raise store_error(self.db.location, exc, "write") from None
