"""A throwaway PostgreSQL server for tests, started from the installed binaries.

Postgres refuses to run as root, and pytest-postgresql's ``postgresql_proc`` runs ``pg_ctl`` as
the current user inside pytest's private (0700) temp folder. So this helper runs ``initdb`` and
``pg_ctl`` itself: as the ``postgres`` user (via ``runuser``) when the tests run as root, in a
temp folder owned by that user; directly otherwise. Per-test databases come from
pytest-postgresql's ``DatabaseJanitor``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support import free_port

_TIMEOUT_S = 60


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: $BENCHFLOW_PG_BIN, Debian's newest, or PATH."""
    if os.environ.get("BENCHFLOW_PG_BIN"):
        return Path(os.environ["BENCHFLOW_PG_BIN"])
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if debian:
        return Path(debian[-1])
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_pg_bin() -> Path:
    """The Postgres binaries folder. Without one, the test skips (with the reason) on a developer
    machine but FAILS when ``CI=true``: like the Docker tests, the Postgres tests never skip in CI."""
    import pytest

    bin_dir = find_pg_bin()
    if bin_dir is not None and (bin_dir / "pg_ctl").exists():
        return bin_dir
    reason = ("PostgreSQL server binaries not found (apt-get install postgresql, or set BENCHFLOW_PG_BIN)"
              + (f"; {bin_dir}/pg_ctl does not exist" if bin_dir is not None else ""))
    if in_ci():
        pytest.fail(f"CI=true and {reason}; Postgres tests do not skip in CI", pytrace=False)
    pytest.skip(reason)


class PostgresServer:
    """``start()``/``stop()`` can be called repeatedly (tests stop it to simulate an outage)."""

    def __init__(self, bin_dir: Path, port: int | None = None, user: str = "postgres"):
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.user = user  # the database superuser
        self._as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="benchflow-pg-"))
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"
        if self._as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.base, account.pw_uid, account.pw_gid)
        self._initdb()

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, env=env, check=False)
        if proc.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}\n{log[-2000:]}")
        return proc

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", self.user, "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync", "--no-instructions")

    def start(self) -> None:
        # the deploy tests' session runs a Prefect server, workers and flow-run processes against this one
        # server, each with its own connection pool: Postgres's default of 100, not fewer
        opts = f"-F -p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.logfile), "-w", "-t", "30", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", "stop")

    def running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop()
            except RuntimeError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)
