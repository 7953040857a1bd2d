"""Misbehaving endpoints, as a user of ``benchflow bench`` sees them (issue 11's matrix).

The endpoint is a real HTTP server (tests/faults/conftest.py ``FaultServer``) whose answers are
the faults: 429s, a stream of messages that are not JSON, a stream cut in the middle of a
message, a server that sends headers and then nothing, and one that never answers at all. Every
request must be accounted for (completed or failed with its class), none retried, the run must end
within the request timeout, and the exit code must say whether anything succeeded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.faults.conftest import REPO, fault_server

pytestmark = pytest.mark.integration

TIMEOUT_S = 3  # the per-request timeout given to bench: a silent server costs this much


def _bench(url: str, tmp_path: Path, requests: int, concurrency: int = 3) -> tuple[int, str, str, dict, pd.DataFrame]:
    summary, records = tmp_path / "summary.json", tmp_path / "records.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "benchflow", "bench", "--url", url, "--model", "m", "--dataset", "D(8,4)",
         "--concurrency", str(concurrency), "--requests", str(requests), "--warmup", "0", "--timeout", str(TIMEOUT_S),
         "--json", str(summary), "--records", str(records)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    data = json.loads(summary.read_text()) if summary.exists() else {}
    frame = pd.read_parquet(records) if records.exists() else pd.DataFrame()
    return proc.returncode, proc.stdout, proc.stderr, data, frame


def test_a_mix_of_faults_is_counted_request_by_request_and_the_run_is_invalid(tmp_path):
    behaviours = ("ok", "http_429", "malformed", "cut", "silent", "no_headers")
    with fault_server(*behaviours) as server:
        rc, out, err, summary, records = _bench(server.url, tmp_path, requests=12)
    assert rc == 0, err  # something succeeded: measured
    assert "Traceback" not in out + err
    assert summary["completed"] == 2 and summary["failed"] == 10
    assert summary["errors"] == {"http_4xx": 2, "no_output": 2, "stream_interrupted": 2, "timeout": 4}
    assert summary["completed"] + sum(summary["errors"].values()) == 12, "every request is accounted for"
    assert server.requests == 12, "nothing was retried, not even the 429s"
    assert len(records) == 12 and (records["status"] == 429).sum() == 2
    assert "no: error rate 83.3% exceeds the limit 5.0%" in out, "the run is reported invalid, with the reason"


@pytest.mark.parametrize(("behaviour", "error_class", "message"), [
    ("http_429", "http_4xx", "429 Too Many Requests"),
    ("malformed", "no_output", "no output message"),
    ("cut", "stream_interrupted", ""),
    ("silent", "timeout", f"no complete response within {TIMEOUT_S} s"),
    ("no_headers", "timeout", f"no complete response within {TIMEOUT_S} s"),
])
def test_an_endpoint_that_only_misbehaves_exits_3_naming_the_error(tmp_path, behaviour, error_class, message):
    with fault_server(behaviour) as server:
        rc, out, err, summary, records = _bench(server.url, tmp_path, requests=4, concurrency=2)
    assert rc == 3, out + err  # measured, but no request succeeded
    assert "Traceback" not in out + err
    assert f"error: no request succeeded ({error_class}×4)" in err
    assert message in err
    assert summary["completed"] == 0 and summary["errors"] == {error_class: 4}
    assert summary["output_throughput"] in (0, None), "no throughput from failed requests"
    assert server.requests == 4 and len(records) == 4, "each request sent once and recorded"
