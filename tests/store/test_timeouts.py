"""Client-side bounds on the stores (issue 11, item 2): Postgres timeouts and the S3 client config."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from benchflow.errors import SpecError
from benchflow.store import s3
from benchflow.store.config import StoreConfig
from benchflow.store.db import ResultStore, postgres_connect_args


def test_connect_args_bound_connect_statement_and_tcp_but_the_url_wins():
    args = postgres_connect_args()
    assert args["connect_timeout"] == 5 and args["keepalives"] == 1 and args["tcp_user_timeout"] > 0
    assert "statement_timeout" in args["options"]
    assert "connect_timeout" not in postgres_connect_args({"connect_timeout": "60"})


@pytest.mark.integration
def test_a_postgres_session_has_the_statement_timeout(pg_url: str):
    store = ResultStore(pg_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "30s"
        assert store.upgrade()  # migrations lift it for themselves
    finally:
        store.dispose()


def test_s3_client_times_out_reads_and_retries_little():
    client = s3.make_s3_client("http://127.0.0.1:9", region_name="us-east-1")
    assert client.meta.config.read_timeout == s3.READ_TIMEOUT_S <= 15
    assert client.meta.config.connect_timeout == s3.CONNECT_TIMEOUT_S
    assert client.meta.config.retries["total_max_attempts"] == s3.MAX_ATTEMPTS == 2


def test_write_timeout_from_the_environment():
    assert StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h"}).write_timeout_s == 30
    assert StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h", "BENCHFLOW_STORE_WRITE_TIMEOUT_S": "7.5"}).write_timeout_s == 7.5
    for bad in ("soon", "0", "-1", "99999"):
        with pytest.raises(SpecError, match="BENCHFLOW_STORE_WRITE_TIMEOUT_S"):
            StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h", "BENCHFLOW_STORE_WRITE_TIMEOUT_S": bad})
