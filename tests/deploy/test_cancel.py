"""Cancel stops a campaign, with and without a worker (issue 11, item 1).

``prefect flow-run cancel`` (the UI and the API do the same: the run goes ``Cancelling``) while a
campaign runs: its backend is torn down, the cells measured so far are stored, the campaign is
``cancelled`` in the results database, the flow run ends ``Cancelled``, and no backend process is
left. Without a worker nothing in Prefect watches the run: the flow watches its own state.
"""

from __future__ import annotations

import random
import subprocess
import time
import uuid

import pytest

from benchflow.store.db import ResultStore
from tests.deploy.conftest import deployment_id, tiny_spec, wait_final, write_spec
from tests.deploy.stack import BIN, REPO
from tests.flows.conftest import processes_running

pytestmark = pytest.mark.integration


def _long_spec(name: str, seed: int) -> dict:
    """Many short cells (~1-2 s each): a cancel lands while the campaign is well under way."""
    spec = tiny_spec(name, repetitions=40, time_scale=1.0, max_requests=8, output_tokens=48)
    spec["backends"][0]["engine_args"]["seed"] = seed  # finds this backend's process
    return spec


def _poll(fn, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached after {timeout_s:g}s"
        time.sleep(0.5)


def _completed(store: ResultStore, cid: str) -> set[str]:
    try:
        return store.completed_cell_ids(cid)
    except Exception:  # noqa: BLE001 - the run may not have created the schema yet
        return set()


def _cancel(env: dict, flow_run_id: str) -> None:
    out = subprocess.run([str(BIN / "prefect"), "flow-run", "cancel", flow_run_id], env=env, capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def _assert_no_backend(seed: int) -> None:
    _poll(lambda: not processes_running(f"seed={seed}"), 30, "the backend process to be gone")


def test_cancel_of_benchflow_run_against_a_server_stops_the_campaign(prefect_stack, tmp_path):
    seed = random.randint(10_000, 99_999)
    cid = f"cancel-run-{uuid.uuid4().hex[:6]}"
    path = write_spec(tmp_path / "long.yaml", _long_spec("cancel-run", seed))
    # the results settings come from the server's Secret blocks and Variables, as on a worker
    env = prefect_stack.env(BENCHFLOW_HOME=str(tmp_path / "home"), BENCHFLOW_GPU_SLOTS="off")
    store = ResultStore(prefect_stack.results_url)
    proc = subprocess.Popen([str(BIN / "benchflow"), "run", str(path), "--campaign-id", cid], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _poll(lambda: len(_completed(store, cid)) >= 1 or proc.poll() is not None, 180, "a completed cell")
        assert proc.poll() is None, proc.stdout.read()
        flow_run_id = store.get_campaign(cid)["flow_run_id"]
        _cancel(env, flow_run_id)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    assert "campaign CANCELLED" in out
    campaign = store.get_campaign(cid)
    assert campaign["status"] == "cancelled"
    done = _completed(store, cid)
    assert 1 <= len(done) < 40, "what was measured is stored, the rest never ran"
    with prefect_stack.client() as client:
        assert client.get(f"/flow_runs/{flow_run_id}").json()["state"]["type"] == "CANCELLED"
    _assert_no_backend(seed)


def test_cancel_of_a_deployment_run_by_a_worker_stops_the_campaign(prefect_stack):
    """The worker's runner stops the flow's process (SIGTERM with a cancel intent); the flow's own
    watcher is slowed down here so that it is that path, not the watcher's, that is tested."""
    seed = random.randint(10_000, 99_999)
    cid = f"cancel-worker-{uuid.uuid4().hex[:6]}"
    store = ResultStore(prefect_stack.results_url)
    with prefect_stack.client() as client:
        response = client.post(f"/deployments/{deployment_id(client, 'campaign/adhoc')}/create_flow_run",
                               json={"parameters": {"spec": _long_spec("cancel-worker", seed), "campaign_id": cid},
                                     "job_variables": {"env": {"BENCHFLOW_CANCEL_POLL_S": "3600"}}})
        assert response.status_code == 201, response.text
        flow_run_id = response.json()["id"]
        _poll(lambda: len(_completed(store, cid)) >= 1, 240, "a completed cell")
        _cancel(prefect_stack.env(), flow_run_id)
        final = wait_final(client, flow_run_id, timeout_s=120)
        logs = client.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                 "sort": "TIMESTAMP_ASC"}).json()
    run_log = "\n".join(f"{log['level']} {log['message']}" for log in logs)
    assert final["state"]["type"] == "CANCELLED", prefect_stack.logs()
    try:
        _poll(lambda: (store.get_campaign(cid) or {}).get("status") == "cancelled", 30, "the campaign marked cancelled")
    except AssertionError as e:
        raise AssertionError(f"{e}: {store.get_campaign(cid)['status']}\n{run_log[-6000:]}\n"
                             f"{prefect_stack.logs()[-6000:]}") from None
    assert 1 <= len(_completed(store, cid)) < 40
    _assert_no_backend(seed)
