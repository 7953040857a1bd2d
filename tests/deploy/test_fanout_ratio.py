"""``placement: pool`` against ``placement: local`` on a real Prefect server on Postgres: three
process workers on a pool of their own, each seeing a different fake GPU set (its own host name,
two GPUs, strict per-GPU slots), and a campaign of four simulator backends. In the pool run the
backends' child runs overlap in time (they ran in parallel) on at least two of the workers (each
started with ``--limit 2``, its host's GPUs); every
cell is stored exactly once, and no GPU slot is held by two backends at once (from the slots'
hold/release records in the runs' logs). The wall-time ratio pool/local is printed, not asserted:
on a loaded 2-core machine it says more about the load than about benchflow. The README quotes it
from ``BENCHFLOW_RATIO_REPETITIONS=4 pytest -s tests/deploy/test_fanout_ratio.py``; the suite runs 2
repetitions, about half the time."""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime

import pytest

from benchflow.spec import load_spec
from benchflow.store.db import ResultStore
from tests.deploy.conftest import tiny_spec, wait_final
from tests.deploy.stack import pool_with_backend_deployment, start_worker
from tests.deploy.test_prefect_server import create_run

pytestmark = pytest.mark.integration

BACKENDS = 4
REPETITIONS = int(os.environ.get("BENCHFLOW_RATIO_REPETITIONS", "2"))
WORKERS = 3
HOLD = re.compile(r"backend (\S+): holding GPU slot\(s\) (\S+) ")
RELEASE = re.compile(r"backend (\S+): released GPU slot\(s\) (\S+)$")


def _spec(name: str, placement: str) -> dict:
    # time-scale 1 and 256 output tokens: a cell (~6 s) mostly waits on the simulator's paced tokens, as on
    # a real GPU; with 4 repetitions a backend's work (~25 s) outweighs starting its child run (~10-60 s)
    spec = tiny_spec(name, repetitions=REPETITIONS, placement=placement, parallel=BACKENDS, time_scale=1.0,
                     output_tokens=256)
    first = spec["backends"][0]
    spec["backends"] = [{**first, "name": f"sim-{i}", "gpu_slots": [i % 2], "engine_args": dict(first["engine_args"])}
                        for i in range(BACKENDS)]
    return spec


def _slots(client, hosts: list[str]) -> list[str]:
    names = [f"gpu-{h}-{i}" for h in hosts for i in range(2)]
    for name in names:
        response = client.post("/v2/concurrency_limits/", json={"name": name, "limit": 1, "active": True})
        assert response.status_code in (200, 201), response.text
    return names


def _logs(client, run_ids: list[str]) -> list[dict]:
    out, offset = [], 0
    while True:
        page = client.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": run_ids}}, "sort": "TIMESTAMP_ASC",
                                                 "limit": 200, "offset": offset}).json()
        out += page
        if len(page) < 200:
            return out
        offset += 200


def _holds(client, run_ids: list[str]) -> list[tuple[str, datetime, datetime]]:
    """(slot, held from, released at) for every hold the runs logged."""
    start, holds = {}, []
    for line in _logs(client, run_ids):
        at = datetime.fromisoformat(line["timestamp"])
        if m := HOLD.search(line["message"]):
            for slot in m.group(2).split(","):
                start[(line["flow_run_id"], m.group(1), slot)] = at
        elif m := RELEASE.search(line["message"]):
            for slot in m.group(2).split(","):
                holds.append((slot, start.pop((line["flow_run_id"], m.group(1), slot)), at))
    assert not start, f"held, never released: {start}"
    return holds


def _wall_s(run: dict) -> float:
    return (datetime.fromisoformat(run["end_time"]) - datetime.fromisoformat(run["start_time"])).total_seconds()


def _check_cells(store: ResultStore, cid: str, spec: dict) -> None:
    expected = sorted(c.id for c in load_spec(spec).cells())
    cells = store.cells(cid)
    assert sorted(c["cell_id"] for c in cells) == expected, "every cell stored exactly once"
    assert all(c["status"] == "completed" for c in cells), [(c["cell_id"], c["status"], c["error"]) for c in cells]


def test_a_pool_campaign_on_three_workers_runs_backends_in_parallel_and_reports_its_ratio_to_local(prefect_stack):
    tag = uuid.uuid4().hex[:6]
    pool, hosts = f"bf-ratio-{tag}", [f"ratio-{tag}-h{i}" for i in range(WORKERS)]
    local_host = f"ratio-{tag}-local"
    store = ResultStore(prefect_stack.results_url)
    gpu_env = {"BENCHFLOW_FAKE_NVML": "healthy-2gpu", "BENCHFLOW_GPU_SLOTS": "strict"}
    workers = []
    with prefect_stack.client() as client:
        slots = _slots(client, [*hosts, local_host])
        deployment = pool_with_backend_deployment(client, pool, f"ratio-{tag}")
        try:
            # --limit 2, one run per GPU of the host: without it the first worker to poll took all four
            # children and two of them waited for its slots while the other hosts idled (a loaded run)
            workers = [start_worker(prefect_stack, pool, f"{pool}-{i}", limit=2, BENCHFLOW_GPU_HOST=h, **gpu_env)
                       for i, h in enumerate(hosts)]
            diag = lambda: prefect_stack.logs()[-4000:] + "".join(w.tail(2000) for w in workers)  # noqa: E731
            pool_spec, local_spec = _spec("ratio-pool", "pool"), _spec("ratio-local", "local")
            run = create_run(client, "campaign/adhoc", {"spec": pool_spec, "campaign_id": f"ratio-pool-{tag}",
                                                        "backend_deployment": deployment})
            pool_run = wait_final(client, run["id"], timeout_s=600)
            assert pool_run["state"]["type"] == "COMPLETED", (pool_run["state"], diag())
            children = client.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {
                "operator": "and_", "any_": [run["id"]]}}}).json()
            # the local campaign in the session's worker, on a fake host of its own with two GPU slots
            run = create_run(client, "campaign/adhoc", {"spec": local_spec, "campaign_id": f"ratio-local-{tag}"},
                             job_variables={"env": {"BENCHFLOW_GPU_HOST": local_host, **gpu_env}})
            local_run = wait_final(client, run["id"], timeout_s=600)
            assert local_run["state"]["type"] == "COMPLETED", (local_run["state"], diag())
            holds = _holds(client, [c["id"] for c in children] + [run["id"]])
            leftover = {s: client.get(f"/v2/concurrency_limits/{s}").json()["active_slots"] for s in slots}
        finally:
            for w in workers:
                w.stop()

    _check_cells(store, f"ratio-pool-{tag}", pool_spec)
    _check_cells(store, f"ratio-local-{tag}", local_spec)
    assert len(children) == BACKENDS and all(c["state"]["type"] == "COMPLETED" for c in children), \
        [(c["name"], c["state"]["type"]) for c in children]
    assert len(holds) == 2 * BACKENDS, holds
    for i, (slot, a0, a1) in enumerate(holds):
        for other, b0, b1 in holds[i + 1:]:
            assert slot != other or a1 <= b0 or b1 <= a0, f"slot {slot} held twice: {a0}-{a1} and {b0}-{b1}"
    assert not any(leftover.values()), f"slots still held: {leftover}"
    used_hosts = {slot.rsplit("-", 1)[0] for slot, _, _ in holds if local_host not in slot}
    pool_s, local_s = _wall_s(pool_run), _wall_s(local_run)
    print(f"\nplacement pool: {pool_s:.1f}s on {len(used_hosts)} worker host(s); placement local: {local_s:.1f}s; "
          f"pool/local = {pool_s / local_s:.2f}")
    assert len(used_hosts) >= 2, f"four backends on workers limited to 2 runs each took {used_hosts}"
    spans = sorted((datetime.fromisoformat(c["start_time"]), datetime.fromisoformat(c["end_time"])) for c in children)
    assert any(b0 < a1 for (_, a1), (b0, _) in zip(spans, spans[1:])), f"no two backends ran at once: {spans}"
