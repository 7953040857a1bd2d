"""Store configuration from the environment; credentials never leak into logs or reprs."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from benchflow.store.config import RetryPolicy, StoreConfig, normalize_database_url, redact_url


def test_embedded_defaults_live_under_home(tmp_path: Path):
    cfg = StoreConfig.from_env({"BENCHFLOW_HOME": str(tmp_path)})
    assert cfg.database_url == f"sqlite:///{tmp_path / 'benchflow.db'}"
    assert cfg.artifacts == str(tmp_path / "artifacts") and not cfg.artifacts_are_s3
    assert cfg.spool_dir == tmp_path / "spool"


def test_default_home_is_dot_benchflow_in_the_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    assert StoreConfig.from_env({}).home == tmp_path / ".benchflow"


@pytest.mark.parametrize(("given_url", "expected"), [
    ("postgres://u:p@db:5432/bench", "postgresql+psycopg://u:p@db:5432/bench"),
    ("postgresql://db/bench", "postgresql+psycopg://db/bench"),
    ("postgresql+psycopg://db/bench", "postgresql+psycopg://db/bench"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_plain_postgres_urls_use_psycopg3(given_url: str, expected: str):
    assert normalize_database_url(given_url) == expected
    cfg = StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h", "BENCHFLOW_DATABASE_URL": given_url})
    assert cfg.database_url == expected


def test_s3_settings_and_precedence():
    env = {"BENCHFLOW_HOME": "/tmp/h", "BENCHFLOW_ARTIFACTS": "s3://results/bench",
           "AWS_ENDPOINT_URL": "http://aws-env:9000", "BENCHFLOW_S3_ENDPOINT_URL": "http://minio:9000"}
    cfg = StoreConfig.from_env(env)
    assert cfg.artifacts_are_s3 and cfg.s3_endpoint_url == "http://minio:9000"
    del env["BENCHFLOW_S3_ENDPOINT_URL"]
    assert StoreConfig.from_env(env).s3_endpoint_url == "http://aws-env:9000"
    assert StoreConfig.from_env(env, artifacts="/data/a").artifacts == "/data/a"  # explicit beats env


def test_retry_policy_backs_off_exponentially_with_a_cap():
    assert RetryPolicy(attempts=5, initial_delay_s=0.5, multiplier=2, max_delay_s=3).delays_s() == [0.5, 1.0, 2.0, 3.0]
    cfg = StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h", "BENCHFLOW_STORE_RETRY_ATTEMPTS": "1"})
    assert cfg.retry.delays_s() == []


@given(user=st.text(alphabet="abcdefghij_", min_size=1, max_size=10),
       password=st.text(min_size=4, max_size=30).filter(lambda p: p.strip() == p and "***" not in p))
def test_password_never_appears_in_redacted_url_or_repr(user: str, password: str):
    url = f"postgresql://{user}:{quote(password, safe='')}@db.internal:5432/bench"
    redacted = redact_url(url)
    assert redacted == f"postgresql://{user}:***@db.internal:5432/bench"
    cfg = StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h", "BENCHFLOW_DATABASE_URL": url})
    other = StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h", "BENCHFLOW_DATABASE_URL": f"postgresql://{user}:x@h/b"})
    ordinary = repr(other) + other.model_dump_json() + str(other.model_dump())  # "null", "retry", ...
    assume(quote(password, safe="") not in ordinary)
    for shown in (repr(cfg), str(cfg), cfg.redacted_database_url, cfg.model_dump_json(), str(cfg.model_dump())):
        assert quote(password, safe="") not in shown.replace(f"{user}:***@", "")


def test_results_log_only_the_redacted_url(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from benchflow.store.results import Results

    url = "postgresql://bench:hunter2-secret@127.0.0.1:1/bench"
    with caplog.at_level(logging.DEBUG):
        results = Results.from_env({"BENCHFLOW_HOME": str(tmp_path), "BENCHFLOW_DATABASE_URL": url})
    assert "bench:***@127.0.0.1" in caplog.text
    assert "hunter2" not in caplog.text and "hunter2" not in repr(results)


def test_password_in_query_string_is_redacted_too():
    assert redact_url("postgresql://db/bench?sslmode=require&password=topsecret") == (
        "postgresql://db/bench?sslmode=require&password=***")


@pytest.mark.parametrize(("name", "value"), [("BENCHFLOW_STORE_RETRY_ATTEMPTS", "many"),
                                             ("BENCHFLOW_STORE_RETRY_ATTEMPTS", "0"),
                                             ("BENCHFLOW_STORE_RETRY_DELAY_S", "-1")])
def test_bad_retry_settings_are_reported_clearly(name: str, value: str):
    from benchflow.errors import SpecError

    with pytest.raises(SpecError, match="BENCHFLOW_STORE_RETRY"):
        StoreConfig.from_env({"BENCHFLOW_HOME": "/tmp/h", name: value})


@pytest.mark.parametrize("url", ["sqlite:////abs/path/benchflow.db", "sqlite:///rel.db", "sqlite://",
                                 "postgresql+psycopg://u@h:5432/db?sslmode=require"])
def test_urls_without_secrets_are_unchanged(url: str):
    assert redact_url(url) == url
