"""The launcher contract (benchflow/launch/base.py), as tests that run over every launcher.

In the style of Optuna's ``StorageTestCase``: the tests are written once against a harness
(tests/launch/harness.py) and ``tests/launch/test_contract.py`` runs them for the ``process``,
``none`` (endpoint) and ``docker`` launchers through the ``launcher_harness`` fixture
(tests/launch/conftest.py). A new launcher gets a harness and a fixture parameter, nothing else.

Every wait is a bounded poll; nothing asserts on wall-clock time. "Fails fast" is shown by the
error itself: an exit is reported as an exit, never as the readiness timeout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from benchflow.errors import BackendStartError
from tests.launch.harness import MODEL, wait_for

#: Generous: the readiness timeout of a healthy start on a loaded 2-core machine.
READY_S = 90.0


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def complete(url: str) -> None:
    """One completion request; errors are ignored (a crashing backend drops the connection)."""
    body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 2}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback only
            resp.read()
    except (OSError, urllib.error.URLError):
        pass


def test_start_returns_the_url_without_waiting_until_ready(launcher_harness):
    launcher = launcher_harness.make("start", **{"startup-delay-s": 600})
    url = launcher.start()
    assert url == launcher.url and url.startswith("http://127.0.0.1:") and not url.endswith("/")
    with pytest.raises(BackendStartError, match="not ready after"):
        launcher.ready(0.5)  # still loading: start() did not wait for it
    wait_for(lambda: "Uvicorn running on" in launcher_harness.server_log(launcher), what="the server to listen")
    assert launcher.alive() is None  # loading (503) is alive


def test_ready_then_serves_and_is_alive(launcher_harness):
    launcher = launcher_harness.make("ready")
    launcher.start()
    launcher.ready(READY_S)
    assert [m["id"] for m in get_json(f"{launcher.url}/v1/models")["data"]] == [MODEL]
    assert launcher.alive() is None
    if launcher_harness.kind == "docker":
        assert launcher.image_digest and launcher.image_digest.startswith("sha256:")
    else:
        assert launcher.image_digest is None


def test_logs_hold_the_servers_output(launcher_harness):
    launcher = launcher_harness.make("logs")
    launcher.start()
    launcher.ready(READY_S)
    if not launcher_harness.owns_backend:
        assert launcher.logs() == ""  # an endpoint's logs are not benchflow's to read
        return
    text = wait_for(lambda: "Uvicorn running on" in launcher.logs() and launcher.logs(), what="the server's log")
    assert "resolved config" in text
    launcher.stop(30)
    assert text in launcher.logs() and "Shutting down" in launcher.logs()  # the whole log survives stop()
    if launcher_harness.kind == "docker":
        assert "Shutting down" in launcher.log_path.read_text()


def test_a_backend_that_dies_is_reported_by_alive(launcher_harness):
    launcher = launcher_harness.make("dies", **{"crash-after": 0})
    launcher.start()
    launcher.ready(READY_S)
    assert launcher.alive() is None
    complete(launcher.url)  # the first request makes the simulator exit with status 1
    reason = wait_for(launcher.alive, what="alive() to report the dead backend")
    if launcher_harness.owns_backend:
        assert launcher_harness.is_exit(reason, 1), reason
        assert "simulated crash" in launcher.logs()
    else:
        assert reason.startswith("endpoint does not answer")
    launcher.stop(5)
    launcher.stop(5)  # idempotent, also for a dead backend


def test_stop_honours_sigterm_within_the_grace(launcher_harness):
    launcher = launcher_harness.make("graceful")
    launcher.start()
    launcher.ready(READY_S)
    launcher.stop(60)
    if not launcher_harness.owns_backend:
        assert launcher.alive() is None  # stop() leaves an endpoint it does not own running
        return
    assert launcher_harness.is_exit(launcher.alive(), 0)  # SIGTERM, not SIGKILL, ended it
    assert "Shutting down (signal received)" in launcher.logs()


def test_stop_kills_a_backend_that_ignores_sigterm_after_the_grace(launcher_harness):
    if not launcher_harness.owns_backend:
        pytest.skip("an endpoint has no process of its own to signal")
    launcher = launcher_harness.make_stubborn()
    launcher.start()
    wait_for(lambda: "ignoring SIGTERM" in launcher.logs(), what="the backend to ignore SIGTERM")
    launcher.stop(1)
    assert launcher_harness.is_exit(launcher.alive(), -9 if launcher_harness.kind != "docker" else 137)
    launcher.stop(1)


def health_status(url: str) -> int | None:
    """The HTTP status ``/health`` answers, or None when it does not answer within 10 s."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:  # noqa: S310 - loopback only
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_never_ready_raises_with_the_log_tail(launcher_harness):
    launcher = launcher_harness.make("slow", **{"startup-delay-s": 600})
    launcher.start()
    wait_for(lambda: "Uvicorn running on" in launcher_harness.server_log(launcher), what="the server to listen")
    # answering at all (its first request can take longer than the 1 s below on a busy machine; the
    # last probe's reason, a 503, is what the message must carry)
    servers = list(getattr(launcher, "replica_urls", {}).values()) or [launcher.url]  # a router starts after them
    wait_for(lambda: all(health_status(u) is not None for u in servers), READY_S,
             what="the loading server to answer /health")
    with pytest.raises(BackendStartError) as info:
        launcher.ready(1.0)
    assert "not ready after 1s" in str(info.value) and "503" in str(info.value), str(info.value)
    if launcher_harness.owns_backend:
        assert "resolved config" in info.value.log_tail
    launcher.stop(5)


def test_an_exit_at_start_up_fails_fast_with_the_exit_code(launcher_harness):
    if not launcher_harness.owns_backend:
        pytest.skip("an endpoint has no start-up of its own")
    launcher = launcher_harness.make("oom", **{"gpu-memory-utilization": 0.01})
    launcher.start()
    with pytest.raises(BackendStartError) as info:
        launcher.ready(600)  # the exit, not this timeout, ends the wait
    assert f"backend exited during start-up ({launcher_harness.exited(1)})" in str(info.value)
    assert "No available memory for the cache blocks" in info.value.log_tail
    launcher.stop(5)


def test_cleanup_removes_what_a_crashed_run_left(launcher_harness):
    launcher = launcher_harness.make("leftover")
    launcher.start()
    launcher.ready(READY_S)
    # the run "crashes" here: no stop(); a later run cleans up by owner
    removed = launcher_harness.cleanup()
    if not launcher_harness.owns_backend:
        assert removed == [] and launcher.alive() is None  # not benchflow's to stop
        return
    assert len(removed) == launcher_harness.parts and all("leftover" in r for r in removed), removed
    assert wait_for(launcher.alive, what="the leftover to be gone")
    assert launcher_harness.leftovers() == []
    launcher.stop(1)  # a teardown that runs late never raises
