"""The arithmetic and bookkeeping of bench/orchestration_overhead.py (no campaign is run here)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import wait_for

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _at(s: float) -> str:
    return (T0 + timedelta(seconds=s)).isoformat()


def _task(name: str, start: float, end: float) -> dict:
    return {"name": name, "state": "COMPLETED", "start_time": _at(start), "end_time": _at(end)}


def _inputs(windows: list[float], startups: list[float], flow_s: float, wall_s: float):
    tasks = [_task(f"deploy-backend-{i:03x}", 0, s) for i, s in enumerate(startups)]
    tasks += [_task(f"run-cell-b-c4-rep{i}", 0, w + 0.1) for i, w in enumerate(windows)]
    tasks += [_task("persist-cell-8dc", 0, 0.02), _task("persist-cell-632", 0, 0.03)]
    command = {"wall_s": wall_s, "exit_code": 0, "started_at": T0 - timedelta(seconds=5),
               "ended_at": T0 + timedelta(seconds=flow_s + 2)}
    db = {"cells": [{"window_s": w, "status": "completed"} for w in windows]}
    prefect = {"flow_run": {"state": "COMPLETED", "start_time": _at(0), "end_time": _at(flow_s)}, "task_runs": tasks}
    return command, db, prefect


@pytest.mark.parametrize("name, group", [
    ("run-cell-mns8-c4-rep0", "run-cell"), ("persist-cell-8dc", "persist-cell"),
    ("deploy-backend-e1d", "deploy-backend"), ("aggregate", "aggregate"), ("teardown-backend-0a1", "teardown-backend"),
    ("deploy-mns8", "deploy-backend"), ("teardown-mns48", "teardown-backend"),
    ("persist-cell-mns8-c4-rep0", "persist-cell"), ("persist-backend-log-mns8", "persist-backend-log"),
])
def test_task_runs_are_grouped_by_task_not_by_run(overhead, name, group):
    assert overhead.task_group(name) == group


def test_overhead_is_duration_minus_windows_minus_startups(overhead):
    command, db, prefect = _inputs([0.5] * 12, [0.25, 0.35], flow_s=10.0, wall_s=20.0)
    a = overhead.analyse(command, db, prefect)
    assert a["sum_cell_windows_s"] == pytest.approx(6.0)
    assert a["sum_backend_startups_s"] == pytest.approx(0.6)
    assert a["flow_run"]["overhead_s"] == pytest.approx(10.0 - 6.0 - 0.6)
    assert a["flow_run"]["overhead_per_cell_s"] == pytest.approx((10.0 - 6.6) / 12)
    assert a["command"]["overhead_per_cell_s"] == pytest.approx((20.0 - 6.6) / 12)
    assert a["command"]["before_flow_run_s"] == pytest.approx(5.0)
    assert a["command"]["after_flow_run_s"] == pytest.approx(2.0)
    assert a["run_cell_beyond_window_s"] == pytest.approx(12 * 0.1)
    assert a["tasks"]["persist-cell"] == {"count": 2, "total_s": pytest.approx(0.05)}
    assert a["flow_run"]["ephemeral_server_startup_included"] is False
    assert a["command"]["ephemeral_server_startup_included"] is True


@given(windows=st.lists(st.floats(0.01, 5.0), min_size=1, max_size=30),
       startups=st.lists(st.floats(0.01, 60.0), min_size=1, max_size=4), extra=st.floats(0.0, 100.0))
def test_the_parts_add_up_to_the_total(overhead, windows, startups, extra):
    flow_s = sum(windows) + sum(startups) + extra
    a = overhead.analyse(*_inputs(windows, startups, flow_s=flow_s, wall_s=flow_s + 7.0))
    f = a["flow_run"]
    assert f["overhead_s"] + a["sum_cell_windows_s"] + a["sum_backend_startups_s"] == pytest.approx(f["total_s"])
    assert f["overhead_per_cell_s"] * a["cells"] == pytest.approx(f["overhead_s"])
    assert a["command"]["overhead_s"] - f["overhead_s"] == pytest.approx(7.0)


def test_server_start_and_stop_lines_are_found_in_the_command_log(overhead):
    log = ("2026-11-22 04:52:29,896 INFO prefect: Starting temporary server on http://127.0.0.1:8534\n"
           "noise\n2026-11-22 04:52:43,844 INFO prefect: Stopping temporary server on http://127.0.0.1:8534\n")
    times = overhead.server_log_times(log)
    assert times["server_stop_logged_at"] - times["server_start_logged_at"] == timedelta(seconds=13.948)
    assert overhead.server_log_times("no such lines") == {"server_start_logged_at": None,
                                                           "server_stop_logged_at": None}


def test_the_tree_monitor_sees_the_peak_memory_of_children_and_grandchildren(overhead, tmp_path):
    # The grandchild holds its memory until the test has seen it (a flag file), so no poll interval
    # has to fit inside a sleep; the test polls the monitor itself (no thread to race with).
    release = tmp_path / "release"
    grandchild = ("# benchflow.sim stand-in\nimport os, time; x = bytearray(96 * 2**20)\n"
                  f"deadline = time.monotonic() + 60\nwhile not os.path.exists({str(release)!r}) "
                  "and time.monotonic() < deadline:\n    time.sleep(0.02)")
    child = textwrap.dedent(f"""
        import subprocess, sys
        x = bytearray(64 * 2**20)
        subprocess.run([sys.executable, "-c", {grandchild!r}], timeout=90)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child])
    monitor = overhead.TreeMonitor(proc.pid, interval_s=0.05, role=overhead._role)

    def both_seen_at_their_peak() -> dict | None:
        monitor.poll()
        roles = monitor.by_role()
        seen = roles.get("benchflow run", {}).get("peak_rss_mib_max", 0) >= 64 and \
            roles.get("simulator", {}).get("peak_rss_mib_max", 0) >= 96
        return roles if seen else None

    try:
        roles = wait_for(both_seen_at_their_peak, timeout_s=60, interval_s=0.05, proc=proc,
                         what="the child (64 MiB) and the grandchild (96 MiB) at their peak")
        release.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        release.touch()
        proc.kill()
        proc.wait(timeout=10)
    assert roles["simulator"]["processes"] == 1
