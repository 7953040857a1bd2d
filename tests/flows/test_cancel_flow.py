"""A cancel request (the flow run goes Cancelling) stops the campaign flow run in this process."""

from __future__ import annotations

import threading
import time

import pytest

from benchflow.store.results import Results
from tests.flows.conftest import processes_running, sim_backend, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def _cancel_after_first_cell(campaign_id: str, failures: list[str], timeout_s: float = 120) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            results = Results.from_env()
            if results.store.completed_cell_ids(campaign_id):
                flow_run_id = results.store.get_campaign(campaign_id)["flow_run_id"]
                with get_client(sync_client=True) as client:
                    client.set_flow_run_state(flow_run_id, Cancelling(message="test cancel"), force=True)
                return
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            pass
        time.sleep(0.2)
    failures.append(f"no cell of {campaign_id} completed in {timeout_s}s")


def test_a_cancel_request_between_cells_ends_the_run_cancelled_and_the_campaign_cancelled(tmp_path, home,
                                                                                           monkeypatch):
    from flows.campaign import campaign
    from flows.states import summary_of

    monkeypatch.setenv("BENCHFLOW_CANCEL_POLL_S", "0.3")
    path = write_spec(tmp_path, [sim_backend("slow", **{"seed": 5150, "time-scale": 1.0})], repetitions=30,
                      max_requests=6, name="cancel-flow")
    failures: list[str] = []
    canceller = threading.Thread(target=_cancel_after_first_cell, args=("cancel-flow-1", failures))
    canceller.start()
    state = campaign(spec=str(path), campaign_id="cancel-flow-1", return_state=True)
    canceller.join()
    assert not failures, failures
    assert state.is_cancelled(), state
    assert "cancelled" in state.message and "measured cells" in state.message
    assert summary_of(state) == {"campaign_id": "cancel-flow-1", "status": "cancelled"}
    results = Results.from_env()
    assert results.store.get_campaign("cancel-flow-1")["status"] == "cancelled"
    assert 1 <= len(results.store.completed_cell_ids("cancel-flow-1")) < 30
    assert not processes_running("seed=5150"), "the backend is torn down"


def _cancel_while_first_cell_runs(campaign_id: str, failures: list[str], timeout_s: float = 120) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            campaign = Results.from_env().store.get_campaign(campaign_id)
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            campaign = None
        if campaign and processes_running("seed=6160"):  # the backend is up: its first cell starts
            time.sleep(3)
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(campaign["flow_run_id"], Cancelling(message="test cancel"), force=True)
            return
        time.sleep(0.2)
    failures.append(f"{campaign_id} never started its backend in {timeout_s}s")


@pytest.mark.skipif(not __import__("tasks.cell", fromlist=["RUNNER_STOPS"]).RUNNER_STOPS,
                    reason="the runner cannot stop a cell's load yet (should_stop)")
def test_a_cancel_request_during_a_cell_stops_its_load_and_keeps_what_it_measured(tmp_path, home, monkeypatch):
    from flows.campaign import campaign

    monkeypatch.setenv("BENCHFLOW_CANCEL_POLL_S", "0.3")
    # one cell is ~400 requests of 64 tokens at concurrency 2: minutes, unless it is stopped
    path = write_spec(tmp_path, [sim_backend("long", **{"seed": 6160, "time-scale": 1.0})], repetitions=2,
                      max_requests=400, name="cancel-mid", load_points=[{"concurrency": 2}])
    failures: list[str] = []
    canceller = threading.Thread(target=_cancel_while_first_cell_runs, args=("cancel-mid-1", failures))
    canceller.start()
    state = campaign(spec=str(path), campaign_id="cancel-mid-1", return_state=True)
    canceller.join()
    assert not failures, failures
    assert state.is_cancelled(), state
    results = Results.from_env()
    assert results.store.get_campaign("cancel-mid-1")["status"] == "cancelled"
    (cell,) = results.store.cells("cancel-mid-1")
    assert cell["status"] in ("cancelled", "failed") and "cancel" in cell["error"]
    assert not results.store.completed_cell_ids("cancel-mid-1"), "the stopped cell is measured again on resume"
    assert results.artifacts.exists(f"campaigns/cancel-mid-1/cells/{cell['cell_id']}/requests.parquet"), \
        "what the stopped cell measured is stored"
    assert not processes_running("seed=6160")
