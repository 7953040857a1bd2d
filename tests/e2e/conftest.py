"""End to end on the production stores: a password-protected Postgres, an S3 endpoint (moto over
HTTP on 127.0.0.1), and ``benchflow`` run as a subprocess with the environment a user would set.

- ``secure_pg`` (session): a throwaway Postgres that checks passwords on TCP (scram-sha-256).
- ``own_pg`` (function): a dedicated one, for a test that stops and starts it.
- ``s3_url`` (session): a moto S3 server.
- :func:`make_deployment`: one user's setup on those (a fresh database, a fresh bucket and prefix,
  a fresh ``BENCHFLOW_HOME``); ``deployment`` (function) is one on ``secure_pg``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.store.conftest import s3_server  # noqa: F401 - a fixture, shared with the store tests
from tests.store.pg import PostgresServer, require_pg_bin

#: The database password of every server here; no output, row, object or file may contain it.
PASSWORD = f"Pw-e2e-{uuid.uuid4().hex[:16]}"
CLI_TIMEOUT_S = 120
_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class PasswordPostgres(PostgresServer):
    """A throwaway Postgres whose superuser needs :data:`PASSWORD` over TCP."""

    def __init__(self, bin_dir: Path, password: str = PASSWORD):
        self.password = password
        super().__init__(bin_dir)

    def _initdb(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            os.chown(pwfile, *_postgres_ids())
        try:
            self._run("initdb", "-D", str(self.datadir), "--auth-local=trust", "--auth-host=scram-sha-256",
                      f"--pwfile={pwfile}", "-U", self.user, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
                      "--no-instructions")
        finally:
            pwfile.unlink(missing_ok=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=dbname, connect_timeout=5, autocommit=True)

    def create_database(self) -> str:
        dbname = f"bf_e2e_{uuid.uuid4().hex[:10]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return dbname


def _postgres_ids() -> tuple[int, int]:
    import pwd

    account = pwd.getpwnam("postgres")
    return account.pw_uid, account.pw_gid


def _new_server() -> PasswordPostgres:
    bin_dir = require_pg_bin()  # skips locally, fails when CI=true
    server = PasswordPostgres(bin_dir)
    server.start()
    return server


@pytest.fixture(scope="session")
def secure_pg() -> Iterator[PasswordPostgres]:
    server = _new_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def own_pg() -> Iterator[PasswordPostgres]:
    """A Postgres for one test alone (it may stop and start it)."""
    server = _new_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def s3_url(s3_server: str) -> str:
    """The store tests' S3 endpoint on 127.0.0.1 (moto in server mode)."""
    return s3_server


@dataclass
class Deployment:
    """One user's production setup, and ways to look at what benchflow stored there."""

    server: PasswordPostgres
    dbname: str
    s3_url: str
    bucket: str
    prefix: str
    home: Path
    outputs: list[str] = field(default_factory=list)  # everything benchflow printed, every run
    url_override: str | None = None  # another BENCHFLOW_DATABASE_URL (an unreachable one)

    @property
    def database_url(self) -> str:
        return self.url_override or self.server.url(self.dbname)

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    def env(self) -> dict[str, str]:
        """What a user exports: no password anywhere but in BENCHFLOW_DATABASE_URL."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BENCHFLOW_", "AWS_", "PREFECT_")) and k not in ("PGPASSWORD", "DATABASE_URL")}
        env.update(_AWS, BENCHFLOW_HOME=str(self.home), BENCHFLOW_DATABASE_URL=self.database_url,
                   BENCHFLOW_ARTIFACTS=f"s3://{self.bucket}/{self.prefix}", AWS_ENDPOINT_URL=self.s3_url,
                   PREFECT_HOME=str(self.home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PYTHONUNBUFFERED="1")
        return env

    def benchflow(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> tuple[int, str]:
        """Runs ``benchflow ARGS``; returns (exit code, stdout + stderr)."""
        proc = subprocess.run([sys.executable, "-m", "benchflow", *args], env=self.env(), cwd=self.home.parent,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s,
                              check=False)
        self.outputs.append(proc.stdout)
        return proc.returncode, proc.stdout

    def start_benchflow(self, *args: str, log: Path) -> subprocess.Popen:
        """Starts ``benchflow ARGS`` in its own session, its output going to ``log``."""
        with open(log, "w") as fh:
            return subprocess.Popen([sys.executable, "-m", "benchflow", *args], env=self.env(),
                                    cwd=self.home.parent, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    # ---- the database ---------------------------------------------------------------------

    def store(self) -> Any:
        from benchflow.store.db import ResultStore

        return ResultStore(self.database_url)

    def read(self, fn: Callable[[Any], Any]) -> Any:
        store = self.store()
        try:
            return fn(store)
        finally:
            store.dispose()

    def cells_stored(self, campaign_id: str) -> int:
        """Cell rows of the campaign; 0 while the database or its schema is not there yet."""
        from benchflow.errors import StorageError

        try:
            return len(self.read(lambda s: s.cells(campaign_id)))
        except StorageError:
            return 0

    def dump_tables(self) -> str:
        """Every row of every table, as JSON text (what a password search runs over)."""
        with self.server.connect(self.dbname) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
            rows = [f"{t}: {r[0]}" for t in sorted(tables)
                    for r in conn.execute(f'SELECT row_to_json(t)::text FROM "{t}" AS t')]
        assert tables and rows, "nothing stored"
        return "\n".join(rows)

    # ---- the object store -----------------------------------------------------------------

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id=_AWS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=_AWS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def objects(self, campaign_id: str) -> dict[str, tuple[str, int, str]]:
        """key under the campaign (``cells/<id>/summary.json``) -> (ETag, size, last modified)."""
        root = f"{self.prefix}/campaigns/{campaign_id}/"
        out = {}
        for page in self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
            for item in page.get("Contents", []):
                out[item["Key"][len(root):]] = (item["ETag"], item["Size"], item["LastModified"].isoformat())
        return out

    def object_bytes(self, campaign_id: str, key: str) -> bytes:
        obj = self.s3().get_object(Bucket=self.bucket, Key=f"{self.prefix}/campaigns/{campaign_id}/{key}")
        return obj["Body"].read()


def make_deployment(server: PasswordPostgres, s3_url: str, base: Path) -> Deployment:
    deployment = Deployment(server=server, dbname=server.create_database(), s3_url=s3_url,
                            bucket=f"bf-e2e-{uuid.uuid4().hex[:10]}", prefix="results/bench", home=base / "home")
    deployment.home.mkdir(parents=True)
    deployment.s3().create_bucket(Bucket=deployment.bucket)
    return deployment


@pytest.fixture
def deployment(secure_pg: PasswordPostgres, s3_url: str, tmp_path: Path) -> Deployment:
    return make_deployment(secure_pg, s3_url, tmp_path)


def write_spec(path: Path, name: str, backends: list[dict], *, repetitions: int, max_requests: int = 6,
               dataset: str = "D(16,8)", concurrency: int = 2, **extra: Any) -> Path:
    """A small campaign of simulated backends."""
    spec = {
        "name": name, "allow_simulated": True, "model": {"name": "sim-e2e"}, "backends": backends,
        "workload": {"dataset": dataset, "seed": 7, "load_points": [{"concurrency": concurrency}],
                     "max_requests": max_requests, "warmup_requests": 1, "request_timeout_s": "20s",
                     "max_duration_s": "30s"},
        "repetitions": repetitions, **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sim(name: str, **engine_args: Any) -> dict:
    return {"name": name, "kind": "sim", "ready_timeout_s": 30, "engine_args": engine_args}


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    """Polls ``condition``; fails when it times out or when ``proc`` ends first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        output = log.read_text() if log and log.exists() else ""
        assert proc is None or proc.poll() is None, f"benchflow ended before {what}:\n{output[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{output[-3000:]}"
        time.sleep(0.1)


def stop_process_group(proc: subprocess.Popen, home: Path) -> None:
    """Ends a ``benchflow run`` started by a test, and any backend it left behind."""
    from benchflow.launch.process import reap_leftovers

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for registry in (home / "runs").glob("*/processes"):
        reap_leftovers(registry, grace_s=2.0)


def spool_bytes(spool_dir: Path) -> bytes:
    """Every file of the spool, concatenated."""
    return b"".join(p.read_bytes() for p in sorted(spool_dir.rglob("*")) if p.is_file())


def json_rows(rows: list[dict]) -> str:
    return json.dumps(rows, default=str, sort_keys=True)
