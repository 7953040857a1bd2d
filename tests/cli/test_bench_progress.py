"""``benchflow bench`` shows a live bar on a terminal, and nothing extra when stdout is not one."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.cli.test_entrypoint import BENCHFLOW, _env
from tests.cli.test_run_progress import ANSI, _run_in_pty

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim():
    from tests.support.sim_process import SimServer

    server = SimServer("--time-scale", "0.05", "--max-model-len", "256")
    yield server
    server.stop()


def _argv(url: str) -> list[str]:
    return [BENCHFLOW, "bench", "--url", url, "--model", "sim-model", "--concurrency", "2", "--requests", "20",
            "--warmup", "2", "--dataset", "D(16,8)"]


def test_bench_in_a_pty_shows_the_request_bar(sim):
    env = {**_env(), "COLUMNS": "160", "TERM": "xterm"}
    code, out = _run_in_pty(_argv(sim.url), env, timeout_s=180)
    text = ANSI.sub("", out)
    assert code == 0, text[-3000:]
    assert re.search(r"requests .*\b22/22\b", text), text[-3000:]  # warm-up included


def test_bench_into_a_pipe_prints_no_bar(sim):
    proc = subprocess.run(_argv(sim.url), env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "requests ━" not in proc.stdout and "22/22" not in proc.stdout and "\x1b[" not in proc.stdout
