"""A campaign fanned out by backend (``placement: pool``) on a real Prefect server on Postgres with two
process workers: each backend runs as its own ``campaign-backend/backend`` flow run, started by the
``campaign/adhoc`` run with ``run_deployment``; the parent aggregates and reports from the shared store."""

from __future__ import annotations

import pytest

from benchflow.spec import load_spec
from benchflow.store.db import ResultStore
from tests.deploy.conftest import tiny_spec, wait_final
from tests.deploy.test_prefect_server import create_run
from tests.deploy.test_tune_pool import second_worker  # noqa: F401 - the fixture: a second process worker

pytestmark = pytest.mark.integration

BACKENDS = ["sim-a", "sim-b", "sim-c"]


def _spec(name: str, backends: list[str], *, repetitions: int, parallel: int) -> dict:
    spec = tiny_spec(name, repetitions=repetitions, placement="pool", parallel=parallel)
    first = spec["backends"][0]
    spec["backends"] = [{**first, "name": b, "engine_args": dict(first["engine_args"])} for b in backends]
    return spec


def _children(client, parent_id: str) -> list[dict]:
    runs = client.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {
        "operator": "and_", "any_": [parent_id]}}}).json()
    for r in runs:
        r["flow_name"] = client.get(f"/flows/{r['flow_id']}").json()["name"]
    return runs


def test_a_pool_campaign_runs_each_backend_as_its_own_flow_run_in_parallel(prefect_stack, second_worker):  # noqa: F811
    cid = "fanout-ok"
    spec = _spec("fanout", BACKENDS, repetitions=3, parallel=len(BACKENDS))
    expected = {c.id: c.backend for c in load_spec(spec).cells()}
    with prefect_stack.client() as client:
        run = create_run(client, "campaign/adhoc", {"spec": spec, "campaign_id": cid})
        final = wait_final(client, run["id"], timeout_s=300)
        assert final["state"]["type"] == "COMPLETED", (final["state"], prefect_stack.logs(), second_worker.tail())
        children = _children(client, run["id"])
    backend_runs = [r for r in children if r["flow_name"] == "campaign-backend"]
    assert sorted(r["name"] for r in backend_runs) == sorted(f"{cid} · {b}" for b in BACKENDS), children
    assert all(r["state"]["type"] == "COMPLETED" for r in backend_runs), [r["state"] for r in backend_runs]
    assert len({r["id"] for r in backend_runs}) == len(BACKENDS)

    store = ResultStore(prefect_stack.results_url)
    cells = store.cells(cid)
    ids = [c["cell_id"] for c in cells]
    assert sorted(ids) == sorted(expected), "every cell stored exactly once"
    assert all(c["status"] == "completed" for c in cells), [(c["cell_id"], c["status"], c.get("error")) for c in cells]
    assert store.get_campaign(cid)["status"] == "completed"
    assert store.aggregates(cid), "the parent aggregated the children's cells"

    spans = {}  # each backend's measured span, from its cells' own start and end times
    for c in cells:
        lo, hi = spans.get(c["backend_name"], (c["started_at"], c["finished_at"]))
        spans[c["backend_name"]] = (min(lo, c["started_at"]), max(hi, c["finished_at"]))
    names = sorted(spans)
    overlapping = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                   if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]
    assert overlapping, f"no two backends were measured at the same time: {spans}"


def test_a_failing_backend_run_reports_its_cause_in_the_parent(prefect_stack, second_worker):  # noqa: F811
    cid = "fanout-bad"
    spec = _spec("fanout-bad", ["sim-ok", "sim-bad"], repetitions=1, parallel=2)
    spec["backends"][1]["engine_args"]["startup-delay-s"] = 120  # never ready within its timeout
    spec["backends"][1]["ready_timeout_s"] = 3
    with prefect_stack.client() as client:
        run = create_run(client, "campaign/adhoc", {"spec": spec, "campaign_id": cid})
        final = wait_final(client, run["id"], timeout_s=240)
        children = _children(client, run["id"])
    assert final["state"]["type"] == "FAILED", final["state"]
    message = final["state"]["message"]
    assert "backend sim-bad (failed)" in message and "never became ready" in message, message
    assert "sim-ok (" not in message, message
    by_name = {r["name"]: r["state"]["type"] for r in children if r["flow_name"] == "campaign-backend"}
    assert by_name == {f"{cid} · sim-ok": "COMPLETED", f"{cid} · sim-bad": "FAILED"}, by_name
    store = ResultStore(prefect_stack.results_url)
    assert {c["backend_name"]: c["status"] for c in store.cells(cid)} == {"sim-ok": "completed", "sim-bad": "failed"}
    assert store.get_campaign(cid)["status"] == "failed"


def test_cancelling_the_parent_cancels_its_backend_runs_and_leaves_no_backend(prefect_stack, second_worker):  # noqa: F811
    import random
    import time

    from tests.deploy.test_cancel import _cancel, _completed, _poll
    from tests.flows.conftest import processes_running

    cid = "fanout-cancel"
    seeds = [random.randint(10_000, 99_999) for _ in range(2)]
    spec = _spec("fanout-cancel", ["sim-x", "sim-y"], repetitions=40, parallel=2)
    for backend, seed in zip(spec["backends"], seeds):
        backend["engine_args"].update({"seed": seed, "time-scale": 1.0})  # finds each backend's process
    store = ResultStore(prefect_stack.results_url)
    with prefect_stack.client() as client:
        run = create_run(client, "campaign/adhoc", {"spec": spec, "campaign_id": cid})
        _poll(lambda: len(_completed(store, cid)) >= 1, 240, "a completed cell")
        _cancel(prefect_stack.env(), run["id"])
        final = wait_final(client, run["id"], timeout_s=120)
        assert final["state"]["type"] == "CANCELLED", final["state"]
        deadline = time.monotonic() + 240  # generous: the worker's cancellation manager is slow on a busy machine
        while True:  # the children go Cancelling -> Cancelled once their worker stopped them
            children = [r for r in _children(client, run["id"]) if r["flow_name"] == "campaign-backend"]
            states = {r["name"]: r["state"]["type"] for r in children}
            if children and all(s in ("CANCELLED", "COMPLETED", "FAILED", "CRASHED") for s in states.values()):
                break
            assert time.monotonic() < deadline, (f"backend runs still going: {states}",
                                                 prefect_stack.logs()[-5000:], second_worker.tail(5000))
            time.sleep(1)
    assert "CANCELLED" in states.values(), states
    assert all(s != "COMPLETED" for s in states.values()), states
    for seed in seeds:
        _poll(lambda: not processes_running(f"seed={seed}"), 60, f"backend seed={seed} gone")
    _poll(lambda: (store.get_campaign(cid) or {}).get("status") == "cancelled", 30, "campaign cancelled")
    assert 1 <= len(_completed(store, cid)) < 80
