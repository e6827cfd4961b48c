"""A private PostgreSQL server a test may restart: initdb + pg_ctl from Debian's binaries, in a temp dir,
on a free loopback port. Never the shared server (``TEST_DATABASE_URL``).

Running as root, the binaries run as the ``postgres`` user (initdb refuses root) and the data directory is
owned by it. Without the binaries the test skips, unless ``CI=true`` or ``REQUIRE_POSTGRES=1``: then it fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.database import _postgres_required


def _bin_dir() -> Path | None:
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """One server: ``url(database)``, ``restart()`` (fast: every session is cut), ``stop()``."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", "60", "-o", options, *extra)

    def start(self) -> None:
        if self._as_postgres:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._pg_ctl("start", "-l", str(self.root / "server.log"))

    def restart(self) -> None:
        """Cut every session and start again (what a container restart of the database does to clients)."""
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.root / "server.log"))

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


def private_postgres() -> Iterator[PrivatePostgres]:
    """The body of a fixture: a started server, stopped and deleted afterwards."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package"
        if _postgres_required():
            pytest.fail(f"{reason} (required because CI=true or REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="private-pg-"))
    server = PrivatePostgres(bin_dir, root)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)
