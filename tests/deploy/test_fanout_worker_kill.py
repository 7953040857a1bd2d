"""A worker SIGKILLed in the middle of a backend (``placement: pool``), on a real Prefect server on
Postgres with two process workers on a pool of their own: the backend's flow-run process notices
its worker is gone and stops itself (SIGTERM: Prefect's engine reports it Crashed, the backend is
torn down), the parent starts the backend again, the other worker measures the remaining cells,
the cells finished before the kill stay stored once, and nothing of the killed worker's tree is left."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime

import pytest

from benchflow.spec import load_spec
from benchflow.store.db import ResultStore
from tests.deploy.conftest import tiny_spec, wait_final
from tests.deploy.stack import descendants, pool_with_backend_deployment, start_worker, wait_tree_gone
from tests.deploy.test_prefect_server import create_run
from tests.support import wait_for

pytestmark = pytest.mark.integration

CELLS = 5


def _children(client, parent_id: str) -> list[dict]:
    return client.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {
        "operator": "and_", "any_": [parent_id]}}, "sort": "EXPECTED_START_TIME_ASC"}).json()


def _completed(store: ResultStore, cid: str) -> dict[str, dict]:
    try:
        return {c["cell_id"]: c for c in store.cells(cid) if c["status"] == "completed"}
    except Exception:  # noqa: BLE001 - the schema may not exist yet
        return {}


def test_a_sigkilled_worker_s_backend_is_finished_by_another_worker(prefect_stack):
    pool = f"bf-kill-{uuid.uuid4().hex[:6]}"
    cid = "fanout-kill"
    spec = tiny_spec("fanout-kill", repetitions=CELLS, placement="pool", parallel=1)
    spec["workload"]["clients"] = 2  # load-client processes, to see them go with the worker
    expected = {c.id for c in load_spec(spec).cells()}
    store = ResultStore(prefect_stack.results_url)
    workers = []
    with prefect_stack.client() as client:
        deployment = pool_with_backend_deployment(client, pool, f"kill-{pool}")
        workers = [start_worker(prefect_stack, pool, f"{pool}-a"), start_worker(prefect_stack, pool, f"{pool}-b")]
        try:
            diag = lambda: prefect_stack.logs()[-4000:] + "".join(w.tail(3000) for w in workers)  # noqa: E731
            run = create_run(client, "campaign/adhoc", {"spec": spec, "campaign_id": cid,
                                                        "backend_deployment": deployment})
            wait_for(lambda: _completed(store, cid), 300, 0.5, what="a first stored cell", detail=diag)
            # the worker whose tree holds the child's flow-run process (only one child runs at a time)
            victim = wait_for(lambda: next((w for w in workers if descendants(w.popen.pid)), None), 60, 0.5,
                              what="the worker running the backend", detail=diag)
            survivor = next(w for w in workers if w is not victim)
            tree = descendants(victim.popen.pid)
            before = _completed(store, cid)
            assert len(before) < CELLS, "the backend finished before the kill: make its cells longer"
            first_child = _children(client, run["id"])[0]
            os.kill(victim.popen.pid, signal.SIGKILL)  # the worker only, not its process group
            victim.popen.wait(10)

            final = wait_final(client, run["id"], timeout_s=420)
            assert final["state"]["type"] == "COMPLETED", (final["state"], diag())
            children = _children(client, run["id"])
        finally:
            for w in workers:
                w.stop()

    states = [(c["id"], c["state"]["type"]) for c in children]
    assert states[0] == (first_child["id"], "CRASHED"), (states, children[0]["state"]["message"])
    assert len(children) == 2 and states[1][1] == "COMPLETED", states
    assert states[1][0] in survivor.log.read_text(errors="replace"), "the other worker ran the second run"
    assert states[1][0] not in victim.log.read_text(errors="replace")

    cells = store.cells(cid)
    assert sorted(c["cell_id"] for c in cells) == sorted(expected), "every cell stored exactly once"
    assert all(c["status"] == "completed" for c in cells), [(c["cell_id"], c["status"], c["error"]) for c in cells]
    after = {c["cell_id"]: c for c in cells}
    for cell_id, row in before.items():  # finished before the kill: kept, not measured again
        assert (after[cell_id]["started_at"], after[cell_id]["finished_at"]) == (row["started_at"], row["finished_at"])
    first_end = datetime.fromisoformat(children[0]["end_time"])
    second_start = datetime.fromisoformat(children[1]["start_time"])
    by_first = {c for c, r in after.items() if r["finished_at"] <= first_end}
    by_second = {c for c, r in after.items() if r["started_at"] >= second_start}
    assert set(before) <= by_first and by_first | by_second == expected, (by_first, by_second)
    assert by_second and not by_first & by_second, "the remaining cells were measured by the second run"
    assert store.get_campaign(cid)["status"] == "completed"

    assert tree, "the killed worker had a flow-run process"
    wait_tree_gone(tree)
    print(f"\nkilled worker's tree: {len(tree)} processes, all gone; {len(by_first)} cells kept, "
          f"{len(by_second)} measured by the other worker")


def test_the_bootstrap_s_zombie_automation_crashes_a_run_whose_heartbeats_stopped(prefect_stack):
    """The automation ``benchflow infra bootstrap`` creates (Prefect's documented zombie-flow
    automation), on the real server's triggers service: one heartbeat, then silence -> Crashed.
    Here with a 10 s window and a tag of its own, so that no other run of the session is touched."""
    from datetime import UTC

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from benchflow.bootstrap import ZombieConfig
    from tasks.infra import ensure_automation

    assert "created   automation        benchflow-crash-zombie-flow-runs" in prefect_stack.bootstrap_output
    tag = f"zombie-{uuid.uuid4().hex[:6]}"
    config = ZombieConfig.model_construct(enabled=True, name=f"test-{tag}", heartbeat_s=5, missed=2, tag=tag)
    with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}), get_client(sync_client=True) as pc:
        assert ensure_automation(pc, config).action == "created"
        assert ensure_automation(pc, config).action == "unchanged", "idempotent"
        automation_id = pc.read_automations_by_name(config.name)[0].id
        try:
            with prefect_stack.client() as client:
                flow = client.post("/flows/", json={"name": "zombie-probe"}).json()
                run = client.post("/flow_runs/", json={"flow_id": flow["id"], "tags": [tag],
                                                       "state": {"type": "RUNNING"}}).json()
                beat = {"id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(),
                        "event": "prefect.flow-run.heartbeat",
                        "resource": {"prefect.resource.id": f"prefect.flow-run.{run['id']}"},
                        "related": [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}]}
                assert client.post("/events", json=[beat]).status_code == 204
                # what the campaign run reads of a child for its own bound (ChildWatch): that heartbeat
                from flows.campaign_backend import last_heartbeat

                seen = wait_for(lambda: last_heartbeat(run["id"]), 60, 0.5, what="the heartbeat readable from the API")
                assert abs(seen - datetime.fromisoformat(beat["occurred"]).timestamp()) < 1
                final = wait_for(lambda: (fr := client.get(f"/flow_runs/{run['id']}").json())["state"]["type"] == "CRASHED"
                                 and fr, 120, 0.5, what="the silent run marked Crashed by the automation")
        finally:
            pc.delete_automation(automation_id)
    assert "no heartbeat for 10s" in final["state"]["message"], final["state"]


def test_the_campaign_run_marks_a_silent_child_crashed_through_the_api(prefect_stack):
    """ChildWatch's verdict is applied with flows.campaign_backend.mark_crashed: forced, final."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.campaign_backend import _state_of, mark_crashed

    with prefect_stack.client() as client:
        flow = client.post("/flows/", json={"name": "silent-probe"}).json()
        run = client.post("/flow_runs/", json={"flow_id": flow["id"], "state": {"type": "RUNNING"}}).json()
        with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}):
            mark_crashed(run["id"], "run x: no heartbeat for 700s (bound 720s)")
            state = _state_of(run["id"])
    assert state.type.value == "CRASHED" and state.message == "run x: no heartbeat for 700s (bound 720s)"
