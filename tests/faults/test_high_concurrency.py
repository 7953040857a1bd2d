"""``benchflow bench`` at concurrency 2,000 (issue 11's matrix).

The server holds every request until 2,000 are in flight together, so the test proves the load
generator really keeps 2,000 connections open at once. The bench process starts with a soft
open-file limit of 1,024 (a common default), which it must raise to the hard limit itself. Every
request must be accounted for, and none may fail with "too many open files".
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import REPO, fault_server

pytestmark = pytest.mark.integration

CONCURRENCY = 2000


@pytest.fixture
def enough_files() -> Iterator[None]:
    """This process serves the 2,000 connections too: its own soft limit goes up for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * CONCURRENCY + 200:
        pytest.skip(f"the hard open-file limit {hard} cannot hold {CONCURRENCY} connections at both ends")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _soft_limit_1024() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def test_concurrency_2000_keeps_2000_requests_in_flight_and_accounts_for_each(enough_files, tmp_path: Path):
    summary_path = tmp_path / "summary.json"
    with fault_server("ok", gate=CONCURRENCY) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "benchflow", "bench", "--url", server.url, "--model", "m", "--dataset", "D(8,4)",
             "--concurrency", str(CONCURRENCY), "--requests", str(CONCURRENCY), "--warmup", "0", "--timeout", "240",
             "--json", str(summary_path)],
            cwd=REPO, capture_output=True, text=True, timeout=400, check=False, preexec_fn=_soft_limit_1024)
        peak, received = server.peak_in_flight, server.requests
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "too many open files" not in output.lower()
    summary = json.loads(summary_path.read_text())
    assert summary["completed"] == CONCURRENCY and summary["failed"] == 0, summary.get("errors")
    assert received == CONCURRENCY, "each request sent once"
    assert peak == CONCURRENCY, "all 2,000 were in flight together"
