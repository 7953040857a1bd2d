"""Failures are visible: red cell task runs carrying the backend's last lines, and failed runs that
end with their summary, never with Prefect's ``TypeError: Unexpected result for failed state``."""

from __future__ import annotations

import time
from uuid import UUID

import pytest

from benchflow.engine import RunFailed
from benchflow.store.results import Results
from tests.flows.conftest import sim_backend, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def _logs(flow_run_id: UUID, until: str, timeout_s: float = 60) -> list[str]:
    """The flow run's log messages, in order, once one of them contains ``until``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
        messages = [log.message for log in logs]
        if any(until in m for m in messages):
            return messages
        assert time.monotonic() < deadline, f"no log line with {until!r} in {timeout_s:g}s: {messages[-5:]}"
        time.sleep(0.5)


def _task_runs(flow_run_id: UUID) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.state.type.value for r in runs}


def test_crashed_backend_shows_red_cells_with_the_crash_message_and_ends_with_the_summary(tmp_path, home):
    from flows.campaign import campaign

    path = write_spec(tmp_path, [sim_backend("crashy", **{"crash-after": 6}), sim_backend("steady")],
                      repetitions=2, max_requests=4, name="red-cells")
    state = campaign(spec=str(path), campaign_id="red-cells-1", return_state=True)
    assert state.is_failed()
    runs = _task_runs(state.state_details.flow_run_id)
    crashy = {n: s for n, s in runs.items() if n.startswith("run-cell-crashy")}
    steady = {n: s for n, s in runs.items() if n.startswith("run-cell-steady")}
    assert "FAILED" in crashy.values(), f"a failed cell's task run is red: {crashy}"
    assert set(steady.values()) == {"COMPLETED"}, "the campaign went on after the failed cell"
    cells = Results.from_env().store.cells("red-cells-1")
    failed = [c for c in cells if c["status"] == "failed" and "backend died" in (c["error"] or "")]
    assert failed and "simulated crash (--crash-after 6)" in failed[0]["error"], "the cause is in the cell's error"
    logs = _logs(state.state_details.flow_run_id, "Finished in state Failed")
    assert any("simulated crash (--crash-after 6)" in m for m in logs), "the cause is in the run log"
    assert not any("TypeError" in m or "Traceback" in m for m in logs), logs[-3:]
    assert "cells failed" in logs[-2] and "cells failed" in logs[-1], "the run ends with its failure summary"


def test_failed_flows_called_for_their_result_raise_the_failure_not_a_type_error(tmp_path, home, monkeypatch):
    from flows.campaign import campaign
    from flows.health import fleet_health

    path = write_spec(tmp_path, [sim_backend("oom", **{"gpu-memory-utilization": 0.05})], repetitions=1,
                      max_requests=2, name="raise-test")
    with pytest.raises(RunFailed) as raised:
        campaign(spec=str(path), campaign_id="raise-test-1")
    assert "never became ready" in str(raised.value)
    assert raised.value.summary == {"campaign_id": "raise-test-1", "status": "failed"}
    monkeypatch.setenv("BENCHFLOW_FAKE_NVML", "ecc")
    with pytest.raises(RunFailed, match="unhealthy"):
        fleet_health(min_devices=1, min_free_gib=0)


def test_a_failed_flow_run_under_the_worker_entrypoint_ends_with_its_summary(home, monkeypatch):
    """The code path of a worker's flow process: the run's last log lines are the summary."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import _run_flow_from_runtime_entrypoint

    from flows.health import fleet_health

    monkeypatch.setenv("BENCHFLOW_FAKE_NVML", "ecc")
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(fleet_health, parameters={"min_devices": 1, "min_free_gib": 0})
    with pytest.raises(BaseException):  # the process would exit here
        _run_flow_from_runtime_entrypoint(run.id, "flows.health:fleet_health")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_failed()
    logs = _logs(run.id, "Finished in state Failed")
    assert not any("TypeError" in m or "Engine execution exited" in m for m in logs), logs
    assert "unhealthy" in logs[-1]
