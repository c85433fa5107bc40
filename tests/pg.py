"""A throw-away PostgreSQL cluster for the tests: ``initdb`` into a temporary directory, the
server on a Unix socket there (no TCP port to collide on), stopped and deleted at the end.

Uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``)
or whatever ``pg_ctl`` is on PATH. ``initdb`` refuses to run as root, so as root the
cluster belongs to the ``postgres`` user (``runuser``). ``RLHF_TEST_PG_URL`` points the
tests at a server of your own instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL = ("the PostgreSQL server is not installed: apt-get install postgresql (or set "
           "RLHF_TEST_PG_URL=postgresql://... to a server of your own)")


def server_bin() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``, the newest version first; None if absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class Cluster:
    """One PostgreSQL server with its own data directory and socket."""

    def __init__(self) -> None:
        bindir = server_bin()
        if bindir is None:
            raise RuntimeError(INSTALL)
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))  # short: sockets have a limit
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&port=5432"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr or out.stdout}")

    def start(self) -> None:
        # No TCP (listen_addresses=''), the socket in our directory, fsync on: the tests
        # check durability promises, so the server keeps its own.
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-o", f"-c listen_addresses='' -k {self.root} -c max_connections=60",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
