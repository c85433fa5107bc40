"""Opening a store: the SQLite file's read-only fallbacks, the schema check or creation,
forward migrations (an SQLite file backed up beside itself first) and the same for a run's
schema on PostgreSQL.

``Opening`` is mixed into ``rlhf.store.Store``, whose connection and transactions it uses.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf.io import warn_once
from rlhf.store_errors import SQLITE_CANTOPEN, StoreError, _guarded, _writable
from rlhf.store_pg import PgConnection, PgLocation, PgTransaction
from rlhf.store_schema import (
    SCHEMA_VERSION,
    Dialect,
    create_schema,
    migrate,
    move_version_marker,
    pg_stored_version,
    stored_version,
)

if TYPE_CHECKING:
    from rlhf.store_errors import _Transaction


class Opening:
    """The opening methods of ``Store`` (which provides the attributes declared below)."""

    path: Path | PgLocation
    location: Path | PgLocation
    db: sqlite3.Connection
    readonly: bool
    version: int
    dialect: Dialect

    if TYPE_CHECKING:
        def transaction(self) -> _Transaction | PgTransaction: ...

    def _connect_readonly(self, timeout: float) -> sqlite3.Connection:
        uri = self.path.absolute().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", timeout=timeout, isolation_level=None, uri=True)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return db
        except sqlite3.OperationalError as e:
            db.close()
            if e.sqlite_errorcode & 0xFF != SQLITE_CANTOPEN or _writable(self.path.parent):
                raise
        # No -shm file and no way to make one: nobody can write here, so a snapshot is exact,
        # except for changes a killed writer left in the -wal file, which SQLite can only
        # read by writing beside it.
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            warn_once(f"{wal} holds changes that cannot be read while {self.path.parent} is "
                      "read-only: what is shown may miss the latest labels (they are not lost)")
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", timeout=timeout,
                               isolation_level=None, uri=True)

    def _check_or_create(self, create: bool) -> None:
        version, old_marker = stored_version(self.db)
        if version is None and not old_marker:
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table'").fetchone() \
                    or not create:
                raise StoreError(f"{self.path}: not an rlhf store (no schema version)")
            with self.transaction():
                create_schema(self.db)
            self.version = SCHEMA_VERSION
            return
        version = self._check_version(version)
        check = self.db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StoreError(f"{self.path}: the database is corrupt ({check}); "
                             "restore it from a copy")
        if old_marker and not self.readonly:  # a reader leaves the old marker as it is
            with self.transaction():
                move_version_marker(self.db, version)
        if version < SCHEMA_VERSION and not self.readonly:
            self._backup(version)
            with self.transaction():
                migrate(self.db, "sqlite", version)
            version = SCHEMA_VERSION
        self.version = version  # a reader of an older store reads it as it is

    def _check_version(self, version: object) -> int:
        if not (isinstance(version, int) and 1 <= version <= SCHEMA_VERSION):
            raise StoreError(f"{self.path}: store schema version {version!r} is not one this "
                             f"rlhf understands (<= {SCHEMA_VERSION}); upgrade rlhf to open it")
        return version

    def _backup(self, version: int) -> Path:
        """A consistent copy of an SQLite store before it is migrated:
        ``store.sqlite.v1.bak`` beside it (never over an earlier copy)."""
        assert isinstance(self.path, Path)
        target = self.path.with_name(f"{self.path.name}.v{version}.bak")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.v{version}.{n}.bak")
        partial = target.with_name(target.name + ".partial")
        try:
            copy = sqlite3.connect(partial)
            with copy:
                self.db.backup(copy)
            copy.close()
            partial.replace(target)
        except (sqlite3.Error, OSError) as e:
            partial.unlink(missing_ok=True)
            raise StoreError(f"{self.path}: could not back it up before upgrading its schema "
                             f"(v{version} -> v{SCHEMA_VERSION}: {e}); nothing was changed. "
                             "Free some space or make the directory writable") from None
        return target

    def _open_pg(self, location: PgLocation, create: bool, timeout: float) -> None:
        self.dialect = "postgresql"
        self.path = self.location = location
        self.db = PgConnection(location, timeout, self.readonly)  # type: ignore[assignment]
        try:
            self._pg_check_or_create(location, create)
        except BaseException:
            self.db.close()
            raise

    @_guarded
    def _pg_check_or_create(self, location: PgLocation, create: bool) -> None:
        db: PgConnection = self.db  # type: ignore[assignment]
        if not db.has_schema():
            if not create:
                runs = db.runs()
                raise StoreError(f"{location}: no such run on this server (runs there: "
                                 f"{', '.join(runs) if runs else 'none'})")
            with self.transaction():
                self.db.execute(f'CREATE SCHEMA IF NOT EXISTS "{location.schema}"')
                if pg_stored_version(db) is None:  # another process may have just made it
                    create_schema(self.db, "postgresql")
            self.version = SCHEMA_VERSION
            return
        version = pg_stored_version(db)
        if version is None:
            raise StoreError(f"{location}: not an rlhf store (its schema has no version)")
        version = self._check_version(version)
        if version < SCHEMA_VERSION and not self.readonly:
            with self.transaction():
                if pg_stored_version(db) == version:
                    migrate(self.db, "postgresql", version)
            version = SCHEMA_VERSION
        self.version = version
