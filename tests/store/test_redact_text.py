"""Free-text redaction (issue 11, item 4): URL passwords, secret flags and env values anywhere."""

from __future__ import annotations

import logging

import pytest

from benchflow.redact import RedactingFilter, redact_spec, redact_text, redact_value
from benchflow.store import rows

SECRET = "s3cr3t-Value-42"


@pytest.mark.parametrize("text", [
    f"GET http://user:{SECRET}@127.0.0.1:8000/v1/models failed",
    f"postgresql+psycopg://postgres:{SECRET}@db:5432/bench",
    f"starting backend b: python -m benchflow.sim --api-key {SECRET} --port 1",
    f"vllm serve m --api-key={SECRET}",
    f"['python', '--api-key', '{SECRET}', '--port', '1']",
    f'["--token", "{SECRET}"]',
    f"env HF_TOKEN={SECRET} OTHER=1",
    f'{{"OPENAI_API_KEY": "{SECRET}"}}',
    f"{{'HF_TOKEN': '{SECRET}'}}",
    f"http://host/x?api_key={SECRET}&n=1",
    f"Authorization: Bearer {SECRET}",
    f"--engine-arg api-key={SECRET}",
])
def test_secrets_in_text_are_hidden(text: str):
    out = redact_text(text)
    assert SECRET not in out and "***" in out
    assert redact_text(out) == out  # idempotent


@pytest.mark.parametrize("text", [
    "ttft_ms.p99 = 3.2 --max-num-batched-tokens 8192 --max-tokens 5 total_tokens=5",
    '{"key": "campaigns/c/cells/x/summary.json", "sha256": "ab"}',
    "http://127.0.0.1:8000/v1/completions returned 500",
    "VLLM_LOGGING_LEVEL=DEBUG CUDA_VISIBLE_DEVICES=0,1",
])
def test_ordinary_text_is_kept(text: str):
    assert redact_text(text) == text


def test_values_and_spec_urls_are_redacted_keys_kept():
    value = {"url": f"http://u:{SECRET}@h/v1", "n": 3, "list": [f"--api-key={SECRET}"], "HF_TOKEN": "x"}
    out = redact_value(value)
    assert SECRET not in str(out) and out["n"] == 3 and set(out) == set(value)
    spec = {"name": "n", "backends": [{"name": "o", "kind": "openai", "url": f"http://u:{SECRET}@h:1/"}]}
    assert redact_spec(spec)["backends"][0]["url"] == "http://u:***@h:1/"


def test_every_row_the_store_writes_is_redacted():
    cell = {"cell_id": "c1", "backend_name": "b", "load_label": "c1", "repetition": 0, "position": 0,
            "status": "failed", "error": f"connect to http://u:{SECRET}@h/v1 refused",
            "invalid_reason": f"--api-key {SECRET}"}
    ops = [rows.cell_op("camp", cell),
           rows.summary_op("camp", "c1", {"errors": {"x": 1}, "examples": [f"http://u:{SECRET}@h"]}),
           rows.manifest_op("camp", {"argv": ["benchflow", "--api-key", SECRET]})]
    assert SECRET not in repr(ops)


def test_log_filter_redacts_messages_and_arguments(caplog):
    logger = logging.getLogger("benchflow.test.redact")
    caplog.handler.addFilter(RedactingFilter())
    logger.warning("backend %s at %s", "b", f"http://u:{SECRET}@h/v1")
    try:
        raise RuntimeError(f"--api-key {SECRET}")
    except RuntimeError:
        logger.exception("failed")
    assert SECRET not in caplog.text


def test_installed_record_factory_redacts_every_handler(caplog):
    from benchflow.redact import install_log_redaction

    before = logging.getLogRecordFactory()
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        logging.getLogger("prefect.task_runs").warning("backend at %s", f"http://u:{SECRET}@h:1")
        assert SECRET not in caplog.text and "http://u:***@h:1" in caplog.text
    finally:
        logging.setLogRecordFactory(before)


def test_artifacts_are_redacted_text_and_parquet_alike(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchflow.store.scrub import redacted_blob

    log = tmp_path / "backend.log"
    log.write_text(f"serving with --api-key {SECRET}\n")
    assert SECRET.encode() not in redacted_blob("campaigns/c/backend-x.log", log)
    clean = b"nothing to hide"
    assert redacted_blob("campaigns/c/report.md", clean) is clean

    table = pa.table({"error_message": [None, f"GET http://u:{SECRET}@h/v1 failed"], "status": [200, 500]})
    raw = io.BytesIO()
    pq.write_table(table, raw)
    out = redacted_blob("campaigns/c/cells/x/requests.parquet", raw.getvalue())
    back = pq.read_table(io.BytesIO(out))
    assert back.column("error_message").to_pylist() == [None, "GET http://u:***@h/v1 failed"]
    assert back.column("status").to_pylist() == [200, 500]
    plain = io.BytesIO()
    pq.write_table(pa.table({"error_message": ["timeout"]}), plain)
    assert redacted_blob("x/requests.parquet", plain.getvalue()) == plain.getvalue()


def test_cli_errors_are_printed_redacted(tmp_path, capsys):
    from benchflow.cli import main

    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nallow_simulated: true\nmodel: {name: m}\nbackends:\n"
                    f"  - {{name: r, kind: openai, url: 'ftp://u:{SECRET}@127.0.0.1:80'}}\n"
                    "workload: {dataset: 'D(16,8)', load_points: [{concurrency: 2}], max_requests: 4}\n")
    before = logging.getLogRecordFactory()
    try:
        assert main(["validate", str(spec)]) == 2
    finally:
        logging.setLogRecordFactory(before)
    err = capsys.readouterr().err
    assert "ftp://u:***@127.0.0.1:80" in err and SECRET not in err


def test_a_spec_path_and_its_message_are_not_an_assignment():
    # `benchflow trigger` names the field it refuses; that line must stay readable
    line = "spec.backends[0].env.HF_TOKEN: looks like a secret; put it in a Secret block"
    assert redact_text(line) == line
    assert redact_text("HF_TOKEN: hf_abc") == "HF_TOKEN: ***"
    assert redact_text("env.HF_TOKEN=hf_abc") == "env.HF_TOKEN=***"
