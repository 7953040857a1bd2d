"""A real `prefect server start` from benchflow's own environment, with the scheduler ON.

SQLite behind the server, no worker: runs are only created, never executed, so the module is
cheap. It checks what the full stack (tests/deploy/conftest.py, scheduler off) cannot:
- the nightly deployment gets scheduled runs soon after `prefect deploy` (sqlalchemy<2.1: with
  2.1, Prefect 3.8's scheduler fails every loop and no run is ever scheduled);
- `benchflow trigger` and the documented REST recipe (`benchflow validate` first) never turn a
  semantically bad spec into a flow run;
- `benchflow trigger` never sends secret-looking values: the Prefect database holds none;
- a GPU slot lease that cannot be renewed stops the block with GpuLeaseLostError.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from importlib import metadata
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.deploy.conftest import deployment_id, tiny_spec, write_spec
from tests.deploy.stack import BIN, REPO, Stack, clean_env, run, start, wait_healthy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scheduler_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scheduler")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    db = tmp / "prefect.db"
    base = clean_env(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_API_URL=api_url)
    stack = Stack(api_url=api_url, results_url="", base_env=base, tmp=tmp)
    try:
        server = start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                  str(port)],
                       {**base, "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}",
                        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true"}, tmp, tmp)
        stack.procs.append(server)
        wait_healthy(api_url, server, timeout_s=180)
        boot = run([str(BIN / "benchflow"), "infra", "bootstrap", "--api-url", api_url, "--gpus", "1"], base)
        assert boot.returncode == 0, boot.stdout + boot.stderr
        deploy = run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file",
                      "deployments/prefect.yaml"], base, cwd=REPO, timeout=240)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        stack.deployed_at = time.monotonic()  # type: ignore[attr-defined]
        stack.db = db  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.stop()


def _runs(client: httpx.Client, deployment: str, state: str | None = None) -> list[dict]:
    body: dict = {"deployments": {"id": {"any_": [deployment_id(client, deployment)]}}}
    if state:
        body["flow_runs"] = {"state": {"type": {"any_": [state]}}}
    response = client.post("/flow_runs/filter", json=body)
    response.raise_for_status()
    return response.json()


def test_sqlalchemy_is_below_2_1_so_the_scheduler_works():
    major, minor = (int(x) for x in metadata.version("sqlalchemy").split(".")[:2])
    assert (major, minor) < (2, 1)
    assert "sqlalchemy>=2.0,<2.1" in (REPO / "pyproject.toml").read_text().replace(" ", "").lower()


def test_the_nightly_gets_scheduled_runs_within_90s_of_deploy(scheduler_server):
    deadline = scheduler_server.deployed_at + 90
    with scheduler_server.client() as client:
        while True:
            scheduled = _runs(client, "campaign/nightly", "SCHEDULED")
            if scheduled or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert scheduled, ("no scheduled run of the nightly 90 s after deploy; server log:\n"
                           + scheduler_server.logs())
        when = sorted(r["expected_start_time"] for r in scheduled)
        assert all(r["auto_scheduled"] for r in scheduled)
    assert "Can't evaluate bulk DML" not in scheduler_server.logs()
    assert when[0] > time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))


BAD_SPECS = {
    "duplicate backend names": (lambda s: s["backends"].append(dict(s["backends"][0])), "backends"),
    "sim without allow_simulated": (lambda s: s.pop("allow_simulated"), "allow_simulated"),
    "unbalanced dataset": (lambda s: s["workload"].update(dataset="D(8"), "workload.dataset"),
    "missing jsonl file": (lambda s: s["workload"].update(dataset={"jsonl": "no-such-file.jsonl"}),
                           "workload.dataset"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_semantically_bad_spec_never_becomes_a_flow_run(scheduler_server, tmp_path, case):
    mutate, field = BAD_SPECS[case]
    spec = tiny_spec(f"bad-{uuid.uuid4().hex[:6]}")
    mutate(spec)
    path = write_spec(tmp_path / "bad.yaml", spec)
    env = scheduler_server.env()
    with scheduler_server.client() as client:
        before = len(_runs(client, "campaign/adhoc"))
        trig = run([str(BIN / "benchflow"), "trigger", "campaign/adhoc", "--spec", str(path)], env)
        # the documented REST recipe: validate first, POST only what validated
        val = run([str(BIN / "benchflow"), "validate", str(path), "--json"], env)
        after = len(_runs(client, "campaign/adhoc"))
    assert trig.returncode == 2, trig.stdout + trig.stderr
    assert val.returncode == 2 and not val.stdout.strip(), val.stdout
    for out in (trig.stderr, val.stderr):
        assert field in out, out
        assert "function-after" not in out and "Traceback" not in out, out
    assert after == before, f"{case}: a flow run was created"


def test_a_valid_spec_through_the_documented_paths_becomes_exactly_one_run(scheduler_server, tmp_path):
    path = write_spec(tmp_path / "good.yaml", tiny_spec("good-trigger"))
    env = scheduler_server.env()
    with scheduler_server.client() as client:
        before = len(_runs(client, "campaign/adhoc"))
        trig = run([str(BIN / "benchflow"), "trigger", "campaign/adhoc", "--spec", str(path)], env)
        assert trig.returncode == 0, trig.stdout + trig.stderr
        val = run([str(BIN / "benchflow"), "validate", str(path), "--json"], env)
        assert val.returncode == 0, val.stderr
        import json

        response = client.post(f"/deployments/{deployment_id(client, 'campaign/adhoc')}/create_flow_run",
                               json={"parameters": {"spec": json.loads(val.stdout)["spec"]}})
        assert response.status_code == 201, response.text
        assert len(_runs(client, "campaign/adhoc")) == before + 2


SECRETS = {"hf": "hf_Zq7SeCrEtToKeN1", "key": "sk-ApIkEy-9931x", "pw": "pAsSw0rdXyZ", "flag": "tok-FlAg-4455"}


def _db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())


def test_trigger_sends_no_secret_and_the_prefect_database_holds_none(scheduler_server, tmp_path):
    spec = tiny_spec("secret-trigger")
    spec["backends"][0]["env"] = {"HF_TOKEN": SECRETS["hf"], "LOG_LEVEL": "info"}
    spec["backends"].append({"name": "remote", "kind": "openai",
                             "url": f"http://bench:{SECRETS['pw']}@127.0.0.1:9/"})
    spec["backends"].append({"name": "engine", "kind": "vllm", "engine_args": {"api-key": SECRETS["key"]},
                             "command": ["vllm", "serve", "m", "--api-key", SECRETS["flag"]]})
    path = write_spec(tmp_path / "secret.yaml", spec)
    env = scheduler_server.env()
    with scheduler_server.client() as client:
        before = len(_runs(client, "campaign/adhoc"))
        trig = run([str(BIN / "benchflow"), "trigger", "campaign/adhoc", "--spec", str(path)], env)
        flag = run([str(BIN / "benchflow"), "trigger", "campaign/adhoc", "--spec-path", "x.yaml", "--param",
                    f'code_path="--token {SECRETS["flag"]}"', "--param", f"api_token={SECRETS['flag']}"], env)
        after = len(_runs(client, "campaign/adhoc"))
    assert trig.returncode == 2, trig.stdout + trig.stderr
    for where in ("spec.backends[0].env.HF_TOKEN", "spec.backends[1].url (password in a URL)",
                  "spec.backends[2].engine_args.api-key", "spec.backends[2].command[4] (value of --api-key)"):
        assert where in trig.stderr, trig.stderr
    assert "Secret block" in trig.stderr
    assert flag.returncode == 2 and "api_token" in flag.stderr, flag.stderr
    assert after == before
    stored = _db_bytes(scheduler_server.db)
    assert stored, "the Prefect database file was not found"
    for value in SECRETS.values():
        assert value.encode() not in stored and value not in trig.stderr + trig.stdout


def test_a_gpu_lease_that_cannot_be_renewed_stops_the_block(scheduler_server, monkeypatch):
    """The lease is revoked on the real server while the block runs: the block is interrupted and
    GpuLeaseLostError names the slot, instead of measuring on with the GPU up for grabs."""
    import prefect.concurrency._leases as leases
    from prefect import flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from benchflow.gpu_slots import LocalGpus
    from benchflow.spec import load_spec
    from tasks.concurrency import GpuLeaseLostError, gpu_slots

    # only the timing is shortened (a real lease lasts >= 60 s, renewed at 75%); the server is real
    monkeypatch.setattr(leases, "_RENEWAL_FRACTION", 0.01)
    monkeypatch.setattr(leases, "_RENEWAL_RETRY_BASE_DELAY", 0.1)
    monkeypatch.setattr(leases, "_RENEWAL_RETRY_MAX_DELAY", 0.2)
    lease_ids: list = []
    renew = SyncPrefectClient.renew_concurrency_lease

    def spy(self, lease_id, lease_duration):
        lease_ids.append(lease_id)
        return renew(self, lease_id, lease_duration)

    monkeypatch.setattr(SyncPrefectClient, "renew_concurrency_lease", spy)
    monkeypatch.setenv("BENCHFLOW_GPU_SLOTS", "auto")
    monkeypatch.setenv("BENCHFLOW_GPU_SLOT_LEASE_S", "60")
    backend = load_spec(tiny_spec(gpu_slots=[0])).backends[0]
    outcome: dict = {}

    @flow
    def hold_the_gpu() -> None:
        try:
            with gpu_slots(backend, host="leasetest", gpus=LocalGpus(env={"BENCHFLOW_GPU_COUNT": "1"})):
                deadline = time.monotonic() + 60
                revoked = False
                while time.monotonic() < deadline:
                    if lease_ids and not revoked:
                        httpx.post(f"{scheduler_server.api_url}/v2/concurrency_limits/decrement-with-lease",
                                   json={"lease_id": str(lease_ids[0])}, timeout=10).raise_for_status()
                        revoked = True
                    time.sleep(0.05)
                outcome["finished"] = True
        except GpuLeaseLostError as e:
            outcome["error"] = str(e)

    with temporary_settings({PREFECT_API_URL: scheduler_server.api_url}):
        hold_the_gpu()
    assert "finished" not in outcome, "the block ran on after its lease was lost"
    assert "lost the lease on GPU slot(s) gpu-leasetest-0" in outcome.get("error", ""), outcome


def test_another_cancellation_inside_the_block_is_not_called_a_lost_lease(scheduler_server, monkeypatch):
    import asyncio

    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from benchflow.gpu_slots import LocalGpus
    from benchflow.spec import load_spec
    from tasks.concurrency import gpu_slots

    monkeypatch.setenv("BENCHFLOW_GPU_SLOTS", "auto")
    backend = load_spec(tiny_spec(gpu_slots=[0])).backends[0]
    seen: dict = {}

    @flow
    def cancel_inside() -> None:
        try:
            with gpu_slots(backend, host="leasetest2", gpus=LocalGpus(env={"BENCHFLOW_GPU_COUNT": "1"})):
                raise asyncio.CancelledError("stop")
        except asyncio.CancelledError as e:
            seen["error"] = e

    with temporary_settings({PREFECT_API_URL: scheduler_server.api_url}):
        cancel_inside()
    assert type(seen.get("error")) is asyncio.CancelledError, seen
    with httpx.Client(base_url=scheduler_server.api_url) as client:  # the slot was given back
        limit = client.get("/v2/concurrency_limits/gpu-leasetest2-0").json()
    assert limit["active_slots"] == 0, limit
