"""A cell whose load is an external driver (``workload.driver``), run through ``measure_cell``
against the real simulator over HTTP: tasks, steps and their rates come from the driver's lines;
a driver that hangs is stopped after ``stuck_after_s`` (``stuck``), one that loops on a
context-overflow error is stopped (``retry_storm``, quoting the line); no process is left behind.
"""

from __future__ import annotations

import json
import sys
import threading

import psutil
import pytest

from benchflow.campaign import stored_status
from benchflow.runner import measure_cell_sync
from benchflow.spec import load_spec
from tests.support.helpers import wait_for
from tests.support.sim_process import SimServer
from tests.workload.test_driver_agent import write_agent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim():
    # a small KV cache (436 blocks of 16 tokens) that four agents' growing contexts fill above 70%
    server = SimServer("--time-scale", "0.2", "--gpu-memory-utilization", "0.22", "--max-model-len", "4096")
    yield server
    server.stop()


def _spec(url: str, script, *args: str, concurrency: int = 4, **driver):
    command = [sys.executable, str(script), "--url", "{url}", "--model", "{model}", "--concurrency", "{concurrency}",
               *args]
    return load_spec({
        "name": "driver-cell", "model": "sim-model", "backends": [{"name": "sim", "kind": "openai", "url": url}],
        "workload": {"load_points": [{"concurrency": concurrency}], "max_duration_s": "5m",
                     "driver": {"command": command, "task_done": r"^FINISHED SIMULATION:",
                                "step_done": r"\[PROFILE\].*type=step_complete", **driver}}})


def _left_behind(marker: str) -> list[psutil.Process]:
    """Live processes whose command line names ``marker`` (the driver script and its grandchild)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(marker in a for a in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _gone(marker: str) -> None:
    wait_for(lambda: not _left_behind(marker), 30.0, what=f"no process of {marker} left",
             detail=lambda: repr(_left_behind(marker)))


def test_driver_cell_counts_tasks_and_steps_with_their_rates(sim, tmp_path):
    script = write_agent(tmp_path)
    spec = _spec(sim.url, script, "--tasks", "8", "--turns", "3", "--prompt-words", "1500",
                 "--turn-words", "300", "--max-tokens", "32", expected_tasks=8, stuck_after_s="60s")
    outcome = measure_cell_sync(spec, spec.cells()[0], sim.url, scrape_interval_s=0.1)
    s = outcome.summary
    assert outcome.status == "completed", outcome.error
    assert s["invalid"] is None
    assert (s["tasks_done"], s["steps_done"], s["tasks_unfinished"]) == (8, 24, 0)
    assert s["tasks_per_min"] == pytest.approx(8 / s["driver_duration_s"] * 60)
    assert s["steps_per_s"] == pytest.approx(24 / s["driver_duration_s"])
    assert s["driver"]["stop_reason"] == "exited" and s["driver"]["exit_code"] == 0
    assert s["concurrency"] == 4 and "--concurrency" in s["driver"]["argv"]
    assert s["driver"]["argv"][s["driver"]["argv"].index("--concurrency") + 1] == "4"
    # the active window comes from the KV-cache samples: the small cache was filled above 70%
    assert s["active_start_ns"] is not None, "the KV cache never went above 70%"
    assert s["active_steps_per_s"] is not None and s["active_steps_per_s"] > 0
    assert 0.0 <= s["steps_outside_active_fraction"] <= 1.0
    files = outcome.artifacts()
    log = files["driver.log"].decode()
    assert log.count("FINISHED SIMULATION:") == 8 and log.count("type=step_complete") == 24
    progress = json.loads(files["driver_progress.json"])
    assert len(progress["task_done_s"]) == 8 and progress["task_done_s"] == sorted(progress["task_done_s"])
    assert json.loads(files["summary.json"])["tasks_done"] == 8
    _gone(str(script))


def test_a_driver_that_hangs_is_stopped_and_marked_stuck(sim, tmp_path):
    script = write_agent(tmp_path)
    spec = _spec(sim.url, script, "--tasks", "6", "--turns", "2", "--mode", "hang", concurrency=2,
                 expected_tasks=6, stuck_after_s="2s", stop_grace_s="2s")
    outcome = measure_cell_sync(spec, spec.cells()[0], sim.url, scrape_interval_s=0.2)
    s = outcome.summary
    assert outcome.status == "stuck", (outcome.status, outcome.error)
    assert 1 <= s["tasks_done"] <= 2
    assert s["stuck"]["tasks_unfinished"] == 6 - s["tasks_done"] == s["tasks_unfinished"]
    assert s["stuck"]["seconds_without_progress"] >= 2.0
    assert "never finished" in outcome.error and "stuck_after_s = 2" in outcome.error
    assert s["invalid"] and s["invalid"].startswith("stuck:")
    # never green: the store keeps it as a failed cell, its own status leading the error
    assert stored_status(outcome.status, outcome.error)[0] == "failed"
    assert "FINISHED SIMULATION:" in outcome.artifacts()["driver.log"].decode()
    _gone(str(script))  # the driver and its sleeping grandchild


def test_a_context_overflow_retry_loop_is_stopped_and_marked_retry_storm(sim, tmp_path):
    script = write_agent(tmp_path)
    spec = _spec(sim.url, script, "--tasks", "2", "--mode", "storm", concurrency=2, expected_tasks=2,
                 stuck_after_s="2m", error=r"BadRequestError", retry_storm={"repeats": 5, "within_s": "30s"})
    outcome = measure_cell_sync(spec, spec.cells()[0], sim.url, scrape_interval_s=0.2)
    s = outcome.summary
    assert outcome.status == "retry_storm", (outcome.status, outcome.error)
    assert "maximum context length" in s["retry_storm"]["line"]
    assert "maximum context length" in outcome.error and "5 times" in outcome.error
    assert s["tasks_done"] == 0 and s["tasks_unfinished"] == 2
    assert s["driver_error_lines"] >= 5
    assert stored_status(outcome.status, outcome.error)[0] == "failed"
    _gone(str(script))


def test_a_driver_that_cannot_start_fails_the_cell(sim, tmp_path):
    spec = _spec(sim.url, tmp_path / "missing.py", stuck_after_s="30s")
    spec = spec.model_copy(update={"workload": spec.workload.model_copy(update={"driver": spec.workload.driver.model_copy(
        update={"command": [str(tmp_path / "no-such-program"), "{url}", "{concurrency}"]})})})
    outcome = measure_cell_sync(spec, spec.cells()[0], sim.url, scrape_interval_s=0.2)
    assert outcome.status == "failed" and "cannot start the driver" in outcome.error
    assert "cannot start the driver" in outcome.artifacts()["driver.log"].decode()


def test_a_cancelled_cell_stops_its_driver(sim, tmp_path):
    script = write_agent(tmp_path)
    spec = _spec(sim.url, script, "--tasks", "6", "--turns", "2", "--mode", "hang", concurrency=2,
                 expected_tasks=6, stuck_after_s="5m", stop_grace_s="2s")
    asked: list[str] = []

    def stop() -> str | None:  # the campaign is cancelled once the driver runs
        return asked[0] if asked else None

    def cancel_soon() -> None:
        wait_for(lambda: _left_behind(str(script)), 60.0, what="the driver running")
        asked.append("cancel requested by the test")

    threading.Thread(target=cancel_soon, daemon=True).start()
    outcome = measure_cell_sync(spec, spec.cells()[0], sim.url, should_stop=stop, scrape_interval_s=0.2)
    assert outcome.status == "cancelled" and outcome.error == "cancel requested by the test"
    assert outcome.summary["driver"]["stop_reason"] == "cancelled"
    _gone(str(script))


def test_the_driver_dies_with_the_process_that_runs_it(tmp_path):
    """PR_SET_PDEATHSIG: a benchflow killed with SIGKILL (no teardown) still takes its driver along."""
    import subprocess

    code = f"""
import sys
from pathlib import Path
from benchflow.driver import run_driver
from benchflow.spec.driver import DriverSpec
d = DriverSpec(command=[sys.executable, "-c", "import os, time; print('driver pid', os.getpid(), flush=True); "
                        "time.sleep(3600)", "{{url}}", "{{concurrency}}"], task_done="x", stuck_after_s="1h")
run_driver(d, d.argv(url="u", model="m", concurrency=1, output_dir="o"), log_path=Path({str(tmp_path / 'driver.log')!r}),
           output_dir="o", max_duration_s=None)
"""
    parent = subprocess.Popen([sys.executable, "-c", code])
    log = tmp_path / "driver.log"
    try:
        line = wait_for(lambda: log.exists() and next((x for x in log.read_text().splitlines()
                                                      if x.startswith("driver pid")), None),
                        60.0, what="the driver's pid line", proc=parent)
        pid = int(line.split()[-1])
        assert psutil.pid_exists(pid)
    finally:
        parent.kill()
        parent.wait(timeout=30)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30.0,
             what=f"driver pid {pid} gone after its parent was killed", ignore=(psutil.NoSuchProcess,))
