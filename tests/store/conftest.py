"""Real Postgres and a real S3 endpoint (moto over HTTP on 127.0.0.1) for the store tests.

Other test areas can reuse these fixtures by importing them into their own conftest::

    from tests.store.conftest import pg_server, pg_url, s3_server, s3_endpoint  # noqa: F401

- ``pg_server`` (session): a throwaway Postgres (see tests/store/pg.py; works as root).
- ``pg_url`` (function): URL of a fresh, empty database on it, dropped after the test.
- ``s3_server`` (session): a moto S3 server; ``s3_endpoint`` (function): its URL and a fresh bucket,
  with dummy AWS credentials in the environment.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.store.pg import PostgresServer, require_pg_bin

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    bin_dir = require_pg_bin()  # skips locally, fails when CI=true
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database per test (created and dropped with pytest-postgresql's DatabaseJanitor)."""
    from pytest_postgresql.janitor import DatabaseJanitor

    if not pg_server.running():  # a previous test stopped it to simulate an outage
        pg_server.start()
    dbname = f"bf_test_{os.getpid()}_{next(_db_counter)}"
    janitor = DatabaseJanitor(user=pg_server.user, host="127.0.0.1", port=pg_server.port, dbname=dbname,
                              connection_timeout=10)
    janitor.init()
    try:
        yield pg_server.url(dbname)
    finally:
        if pg_server.running():
            janitor.drop()


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    bucket: str

    def client(self):
        from benchflow.store.s3 import make_s3_client

        return make_s3_client(self.url, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    endpoint = S3Endpoint(url=s3_server, bucket=f"bf-{uuid.uuid4().hex[:12]}")
    endpoint.client().create_bucket(Bucket=endpoint.bucket)
    return endpoint


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, unmigrated database: SQLite file or real Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url: str):
    """A migrated ResultStore, once on SQLite and once on Postgres (the contract suite runs on both)."""
    from benchflow.store.db import ResultStore

    result_store = ResultStore(db_url)
    result_store.upgrade()
    try:
        yield result_store
    finally:
        result_store.dispose()
