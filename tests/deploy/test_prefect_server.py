"""Deployments against a real Prefect server on Postgres, with a process worker on the GPU pool.

One stack for the module (tests/deploy/conftest.py): `prefect server start`, `benchflow infra
bootstrap --gpus 1`, `prefect deploy --all`, `prefect worker start --pool benchflow-gpu`. The
worker's environment has no BENCHFLOW_DATABASE_URL: the flows load it from the Secret block
that the bootstrap created, and store their results in a Postgres database.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest

from benchflow.gpu_slots import host_name
from benchflow.store.db import ResultStore
from tests.deploy.conftest import deployment_id, tiny_spec, wait_final, write_spec
from tests.deploy.stack import BIN, REPO, run

pytestmark = pytest.mark.integration


def create_run(client, deployment: str, parameters: dict, expect: int = 201, **body) -> dict:
    """POST /deployments/{id}/create_flow_run: 201 for a new run, 200 for an idempotency-key match."""
    response = client.post(f"/deployments/{deployment_id(client, deployment)}/create_flow_run",
                           json={"parameters": parameters, **body})
    assert response.status_code == expect, response.text
    return response.json()


def results(stack) -> ResultStore:
    return ResultStore(stack.results_url)


def poll(fn, timeout_s: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached after {timeout_s}s")


def test_bootstrap_twice_changes_nothing(prefect_stack):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from benchflow.bootstrap import HostConfig, InfraConfig, build_plan
    from tasks.infra import snapshot

    assert "created   concurrency-limit gpu-" in prefect_stack.bootstrap_output
    assert "created   secret            benchflow-database-url" in prefect_stack.bootstrap_output
    env = prefect_stack.bootstrap_env()
    plan = build_plan(InfraConfig(), REPO, local_host=HostConfig(name=host_name(), gpus=1), env=env)
    with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}), get_client(sync_client=True) as client:
        before = snapshot(client, plan)
        again = run([str(BIN / "benchflow"), "infra", "bootstrap", "--api-url", prefect_stack.api_url, "--gpus", "1"],
                    env)
        after = snapshot(client, plan)
    assert again.returncode == 0, again.stderr
    # 2 pools, 4 queues, 1 GPU slot, 2 variables, 3 secrets, 1 automation (zombie flow runs)
    assert "bootstrap: 0 created, 0 updated, 13 unchanged" in again.stdout
    assert after == before
    assert before[f"limit:gpu-{host_name()}-0"]["limit"] == 1


def test_adhoc_via_rest_with_an_idempotency_key_runs_once_and_stores_its_results(prefect_stack, monkeypatch):
    cid = f"rest-{uuid.uuid4().hex[:8]}"
    params = {"spec": tiny_spec("deploy-rest"), "campaign_id": cid}
    with prefect_stack.client() as client:
        first = create_run(client, "campaign/adhoc", params, idempotency_key=f"key-{cid}")
        second = create_run(client, "campaign/adhoc", params, expect=200, idempotency_key=f"key-{cid}")
        assert second["id"] == first["id"]
        runs = client.post("/flow_runs/filter", json={"flow_runs": {"idempotency_key": {"any_": [f"key-{cid}"]}}})
        assert len(runs.json()) == 1
        final = wait_final(client, first["id"])
    assert final["state"]["type"] == "COMPLETED", prefect_stack.logs()
    store = results(prefect_stack)
    campaign = store.get_campaign(cid)
    assert campaign["status"] == "completed" and campaign["flow_run_id"] == first["id"]
    (cell,) = store.cells(cid)
    assert cell["status"] == "completed"
    (summary,) = store.summaries(cid)
    assert summary["summary"]["completed"] == 8
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    # the artifacts went to S3, located by the Variables and signed with the keys from the Secret blocks
    uris = [a["uri"] for a in store.artifacts(cid)]
    assert uris and all(u.startswith(f"{prefect_stack.artifacts}/") for u in uris)
    from benchflow.store.s3 import make_s3_client

    bucket, prefix = prefect_stack.artifacts.removeprefix("s3://").split("/", 1)
    s3 = make_s3_client(prefect_stack.s3_endpoint, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    assert any(cid in obj["Key"] for obj in listed.get("Contents", []))


def test_an_invalid_spec_is_rejected_before_any_run_starts(prefect_stack, tmp_path):
    bad = tiny_spec("deploy-bad")
    bad["backends"] = "not a list"
    with prefect_stack.client() as client:
        dep = deployment_id(client, "campaign/adhoc")
        count = client.post("/flow_runs/count", json={"deployments": {"id": {"any_": [dep]}}}).json()
        response = client.post(f"/deployments/{dep}/create_flow_run", json={"parameters": {"spec": bad}})
        assert response.status_code == 409
        assert "Validation failed for field 'spec.backends'" in response.json()["detail"]
        assert "'not a list' is not of type 'array'" in response.json()["detail"]
        assert client.post("/flow_runs/count", json={"deployments": {"id": {"any_": [dep]}}}).json() == count
    # the CLI stops a bad file before calling the server at all
    path = write_spec(tmp_path / "bad.yaml", {**tiny_spec("deploy-bad"), "allow_simulated": False})
    cli = run([str(BIN / "benchflow"), "trigger", "campaign/adhoc", "--spec", str(path)], prefect_stack.env())
    assert cli.returncode == 2 and "allow_simulated" in cli.stderr


def test_benchflow_trigger_waits_for_the_run_and_an_idempotency_key_gives_the_same_run(prefect_stack, tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", tiny_spec("deploy-cli"))
    key = f"cli-{uuid.uuid4().hex[:8]}"
    cmd = [str(BIN / "benchflow"), "trigger", "campaign/adhoc", "--spec", str(spec), "--idempotency-key", key]
    first = run([*cmd, "--wait", "--timeout", "150"], prefect_stack.env(), timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr + prefect_stack.logs()
    assert ": Completed" in first.stdout
    run_line = first.stdout.splitlines()[0]
    cid = next(line.split()[1] for line in first.stdout.splitlines() if line.strip().startswith("campaign "))
    assert results(prefect_stack).get_campaign(cid)["status"] == "completed"
    again = run(cmd, prefect_stack.env())
    assert again.returncode == 0 and again.stdout.splitlines()[0].split(" (")[0] == run_line.split(" (")[0]


def test_the_nightly_deployment_has_its_cron_schedule_timezone_and_no_overlap(prefect_stack):
    with prefect_stack.client() as client:
        nightly = client.get(f"/deployments/{deployment_id(client, 'campaign/nightly')}").json()
        fleet = client.get(f"/deployments/{deployment_id(client, 'health/fleet')}").json()
    (schedule,) = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *"
    assert schedule["schedule"]["timezone"] == "Europe/Berlin" and schedule["active"]
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert nightly["parameters"] == {"spec": "deployments/campaigns/nightly.yaml"}
    assert nightly["work_pool_name"] == "benchflow-gpu" and nightly["work_queue_name"] == "h100"
    assert nightly["enforce_parameter_schema"] and nightly["pull_steps"] == [{"flows.pull.use_code_dir": {}}]
    assert fleet["schedules"] and fleet["work_queue_name"] == "default"


def _backend_interval(client, flow_run_id: str) -> tuple[datetime, datetime]:
    """deploy-backend start .. teardown-backend end of one flow run (task runs recorded by the server)."""
    def read():
        tasks = client.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
        # task runs are named after their backend: deploy-<backend>, teardown-<backend>
        deploy = [t for t in tasks if t["name"].startswith("deploy-") and t["start_time"]]
        teardown = [t for t in tasks if t["name"].startswith("teardown-") and t["end_time"]]
        return (deploy[0]["start_time"], teardown[0]["end_time"]) if deploy and teardown else None

    start, end = poll(read, what=f"task runs of {flow_run_id}")
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def test_two_campaigns_on_one_gpu_take_turns(prefect_stack):
    # each backend lives for several seconds, so without the slot the two runs would overlap
    specs = [tiny_spec(f"deploy-gpu-{i}", gpu_slots=[0], time_scale=1.0, max_requests=24, output_tokens=64)
             for i in range(2)]
    with prefect_stack.client() as client:
        runs = [create_run(client, "campaign/adhoc", {"spec": s, "campaign_id": f"gpu-{i}-{uuid.uuid4().hex[:6]}"})
                for i, s in enumerate(specs)]
        finals = [wait_final(client, r["id"], timeout_s=180) for r in runs]
        assert [f["state"]["type"] for f in finals] == ["COMPLETED", "COMPLETED"], prefect_stack.logs()
        (a0, a1), (b0, b1) = sorted(_backend_interval(client, r["id"]) for r in runs)
        slot = client.post("/v2/concurrency_limits/filter", json={}).json()
    assert a1 <= b0, f"deploy..teardown intervals overlap: {a0}..{a1} and {b0}..{b1}"
    (gpu0,) = [s for s in slot if s["name"] == f"gpu-{host_name()}-0"]
    assert gpu0["limit"] == 1 and gpu0["active_slots"] == 0  # released by both


def test_a_missing_gpu_slot_fails_under_strict_and_is_created_under_auto(prefect_stack):
    """The worker runs with BENCHFLOW_GPU_SLOTS=strict; the bootstrap made gpu-<host>-0 only."""
    strict_cid, auto_cid = (f"slot-{p}-{uuid.uuid4().hex[:6]}" for p in ("strict", "auto"))
    with prefect_stack.client() as client:
        strict = create_run(client, "campaign/adhoc", {"spec": tiny_spec("deploy-slot7", gpu_slots=[7]),
                                                      "campaign_id": strict_cid})
        auto = create_run(client, "campaign/adhoc", {"spec": tiny_spec("deploy-slot5", gpu_slots=[5]),
                                                    "campaign_id": auto_cid},
                          job_variables={"env": {"BENCHFLOW_GPU_SLOTS": "auto"}})
        strict_final, auto_final = wait_final(client, strict["id"]), wait_final(client, auto["id"])
        names = {s["name"] for s in client.post("/v2/concurrency_limits/filter", json={}).json()}
    assert strict_final["state"]["type"] == "FAILED"
    (cell,) = results(prefect_stack).cells(strict_cid)
    assert cell["status"] == "failed" and "benchflow infra bootstrap" in cell["error"]
    assert f"gpu-{host_name()}-7" not in names
    assert auto_final["state"]["type"] == "COMPLETED", prefect_stack.logs()
    assert f"gpu-{host_name()}-5" in names


def _nightly_spec(time_scale: float) -> dict:
    return tiny_spec("deploy-nightly", time_scale=time_scale, repetitions=3, max_requests=12, output_tokens=32,
                     compare={"metrics": ["tpot_ms.p50", "e2e_ms.p50", "output_throughput"]},
                     regression={"tolerance": 0.05})


def test_a_planted_slowdown_fails_the_nightly_with_its_regressions(prefect_stack, tmp_path):
    """Night 1 is the baseline; night 2 raises the simulator's per-step cost by 30% (time-scale 1.3): a
    change the honest comparison finds at 3 repetitions even with wall-clock noise (docs/metrics.md)."""
    path = tmp_path / "nightly.yaml"
    with prefect_stack.client() as client:
        write_spec(path, _nightly_spec(1.0))
        night1 = create_run(client, "campaign/nightly", {"spec": str(path)})
        first = wait_final(client, night1["id"], timeout_s=180)
        assert first["state"]["type"] == "COMPLETED", first["state"]["message"] + prefect_stack.logs()
        write_spec(path, _nightly_spec(1.3))
        night2 = create_run(client, "campaign/nightly", {"spec": str(path)})
        second = wait_final(client, night2["id"], timeout_s=180)
        message = second["state"]["message"] or ""
        assert second["state"]["type"] == "FAILED", prefect_stack.logs()
        assert "regression(s) against baseline" in message and "tpot_ms.p50 +" in message
        store = results(prefect_stack)
        nightlies = store.campaigns(name="deploy-nightly", kind="nightly")
        assert [c["status"] for c in nightlies] == ["completed", "completed"]  # newest first; both measured fine
        new, old = nightlies[0]["id"], nightlies[1]["id"]
        rows = [r for r in store.comparisons(new) if r["kind"] == "regression"]
        assert {r["baseline_campaign_id"] for r in rows} == {old}
        assert {r["metric"]: r["verdict"] for r in rows}["tpot_ms.p50"] == "regression"
        events = poll(lambda: client.post("/events/filter", json={"filter": {
            "event": {"name": ["benchflow.regression.detected"]},
            "resource": {"id": [f"benchflow.campaign.{new}"]}}}).json()["events"], what="the regression event")
        assert events[0]["payload"]["regressions"]
        artifacts = client.post("/artifacts/filter", json={"artifacts": {"key": {
            "any_": ["nightly-deploy-nightly-regressions"]}}}).json()
        assert any("## Regressions" in (a.get("data") or "") for a in artifacts)


def test_fleet_health_checks_the_host_and_stores_the_report(prefect_stack):
    with prefect_stack.client() as client:
        runs = {scenario: create_run(client, "health/fleet", {},
                                     job_variables={"env": {"BENCHFLOW_FAKE_NVML": scenario}})
                for scenario in ("healthy-2gpu", "ecc")}
        finals = {s: wait_final(client, r["id"]) for s, r in runs.items()}
    assert finals["healthy-2gpu"]["state"]["type"] == "COMPLETED", prefect_stack.logs()
    assert finals["ecc"]["state"]["type"] == "FAILED"
    assert "ECC" in finals["ecc"]["state"]["message"] or "ecc" in finals["ecc"]["state"]["message"]
    reports = results(prefect_stack).health_reports(limit=10)
    assert sorted(r["healthy"] for r in reports[:2]) == [False, True]
    assert all(r["report"]["fake_nvml"] for r in reports[:2])
