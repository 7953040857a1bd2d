"""The shared helpers themselves: bounded polling, spec files, ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.support import PREFECT_STARTUP_TIMEOUT_S, free_port, wait_for, wait_for_async, write_spec


def test_wait_for_returns_the_first_true_value():
    calls = iter([0, None, "", "ready", "later"])
    assert wait_for(lambda: next(calls), timeout_s=5, interval_s=0) == "ready"


def test_wait_for_names_what_and_the_last_value_when_it_times_out():
    values = iter(range(1000))
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the queue to drain; last value: 0"):
        wait_for(lambda: next(values) * 0, timeout_s=0.05, interval_s=0.01, what="the queue to drain")


def test_wait_for_tries_once_more_at_the_deadline():
    calls = []

    def slow_then_true():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.1)  # a stalled machine: the first try outlasts the whole timeout
            return False
        return True

    assert wait_for(slow_then_true, timeout_s=0.05, interval_s=0)
    assert len(calls) == 2


def test_wait_for_ignores_the_given_exceptions_and_reports_them():
    def not_yet():
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(AssertionError, match="last value: ConnectionRefusedError"):
        wait_for(not_yet, timeout_s=0.05, interval_s=0.01, ignore=(OSError,), what="the server")
    with pytest.raises(ZeroDivisionError):
        wait_for(lambda: 1 / 0, timeout_s=1, ignore=(OSError,))


def test_wait_for_fails_fast_when_the_process_exits():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(AssertionError, match=r"exited \(3\) before the log line"):
        wait_for(lambda: False, timeout_s=60, what="the log line", proc=proc, detail=lambda: "LOG TAIL")


async def test_wait_for_async_awaits_coroutine_predicates():
    state = {"n": 0}

    async def bump():
        state["n"] += 1
        return state["n"] >= 3 and state["n"]

    assert await wait_for_async(bump, timeout_s=5, interval_s=0) == 3
    with pytest.raises(AssertionError, match="waiting for never; last value: False"):
        await wait_for_async(lambda: False, timeout_s=0.02, interval_s=0.01, what="never")


def test_write_spec_dumps_dicts_in_order_and_writes_text_as_is(tmp_path):
    path = write_spec(tmp_path, {"name": "x", "a": [1, 2]})
    assert path == tmp_path / "spec.yaml"
    assert path.read_text().startswith("name: x\n") and yaml.safe_load(path.read_text()) == {"name": "x", "a": [1, 2]}
    assert write_spec(tmp_path, "raw: [", name="sub/bad.yaml").read_text() == "raw: ["


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_prefect_in_subprocesses_is_isolated_and_starts_under_load(tmp_path):
    """tests/conftest.py, for every subprocess: Prefect's 20 s ephemeral start-up limit raised, and a
    Prefect home of the session's own, so a `benchflow run` of the tests never shares ~/.prefect (its
    ephemeral server's SQLite database) with another test run, nor reaches a server from a profile."""
    code = ("from prefect.settings import PREFECT_API_URL, PREFECT_HOME, "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout; "
            "print(timeout.value(), PREFECT_HOME.value(), PREFECT_API_URL.value())")
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         env=env)
    timeout, home, api_url = out.stdout.split()
    assert int(timeout) == PREFECT_STARTUP_TIMEOUT_S >= 60
    assert home == os.environ["PREFECT_HOME"] and "benchflow-tests-prefect-home-" in home
    assert api_url == "None"


def test_areas_with_heavy_session_fixtures_are_one_xdist_group_each():
    from tests.conftest import xdist_group_of

    assert xdist_group_of("tests/docker/test_cleanup.py") == "docker"
    assert xdist_group_of("tests/flows/test_campaign_flow.py") == "prefect"
    assert xdist_group_of("tests/store/sub/test_x.py") == "postgres"
    assert xdist_group_of("tests/sim/test_server.py") is None
    assert xdist_group_of("tests/conftest.py") is None and xdist_group_of("other/docker/test_x.py") is None

