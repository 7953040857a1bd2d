"""One real Prefect stack (server on Postgres, bootstrap, deployments, a process worker) per session."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import free_port
from tests.deploy.stack import BIN, POOL, REPO, Stack, clean_env, run, start, wait_healthy
from tests.store.conftest import pg_server, s3_server  # noqa: F401 - the session Postgres and S3 (moto)

#: Dummy keys of the moto S3 endpoint: they reach the flows only as Secret blocks.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _create_db(pg, name: str) -> str:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg.user}@127.0.0.1:{pg.port}/{name}"


@pytest.fixture(scope="session")
def prefect_stack(pg_server, s3_server, tmp_path_factory) -> Iterator[Stack]:  # noqa: F811
    """The infra/compose.yaml stack as local processes: Postgres, Prefect server on Postgres, an S3
    endpoint (moto instead of MinIO), bootstrap + deploy, and a worker (process instead of docker)."""
    tmp = tmp_path_factory.mktemp("deploy")
    suffix = uuid.uuid4().hex[:8]
    bucket = f"bf-deploy-{suffix}"
    _create_bucket(s3_server, bucket)
    prefect_db = _create_db(pg_server, f"prefect_{suffix}")
    results_db = _create_db(pg_server, f"results_{suffix}")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    base = clean_env(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_API_URL=api_url,
                     PREFECT_LOCAL_STORAGE_PATH=str(tmp / "prefect-storage"))
    stack = Stack(api_url=api_url, results_url=f"postgresql+psycopg://{results_db}", base_env=base, tmp=tmp,
                  s3_endpoint=s3_server, artifacts=f"s3://{bucket}/results")
    try:
        server_env = {**base, "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{prefect_db}",
                      # no scheduled runs during the tests: the schedules are still stored and checked
                      "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
        server = start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                       server_env, tmp, tmp)
        stack.procs.append(server)
        wait_healthy(api_url, server)
        # the database URL and the S3 keys become Secret blocks, the artifact location Variables: the
        # worker's environment has none of them, so the flows must load them from the server
        boot = run([str(BIN / "benchflow"), "infra", "bootstrap", "--api-url", api_url, "--gpus", "1"],
                   stack.bootstrap_env())
        assert boot.returncode == 0, boot.stdout + boot.stderr
        stack.bootstrap_output = boot.stdout
        deploy = run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file",
                      "deployments/prefect.yaml"], base, cwd=REPO, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        workdir = tmp / "worker-cwd"  # not the checkout: the pull step must find it
        workdir.mkdir()
        worker_env = stack.env(BENCHFLOW_HOME=str(tmp / "benchflow-home"),
                               BENCHFLOW_GPU_SLOTS="strict", PREFECT_WORKER_QUERY_SECONDS="1",
                               PREFECT_WORKER_PREFETCH_SECONDS="5")
        worker = start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                                  "--name", "test-worker"], worker_env, workdir, tmp)
        stack.procs.append(worker)
        yield stack
    finally:
        stack.stop()


def _create_bucket(endpoint: str, bucket: str) -> None:
    from benchflow.store.s3 import make_s3_client

    env = {**S3_KEYS, "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        make_s3_client(endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def tiny_spec(name: str = "deploy-tiny", *, gpu_slots: list[int] | None = None, time_scale: float = 0.25,
              repetitions: int = 1, max_requests: int = 8, output_tokens: int = 16, **extra) -> dict:
    """1 backend, 1 load point, ~8 requests: a few seconds of simulator traffic."""
    backend = {"name": "sim-a", "kind": "sim", "ready_timeout_s": 30, "stop_grace_s": 2,
               "engine_args": {"max-num-seqs": 8, "time-scale": time_scale}}
    if gpu_slots is not None:
        backend["gpu_slots"] = gpu_slots
    return {"name": name, "allow_simulated": True, "model": {"name": "sim-model"}, "backends": [backend],
            "workload": {"dataset": f"D(32,{output_tokens})", "seed": 3, "load_points": [{"concurrency": 4}],
                         "max_requests": max_requests, "warmup_requests": 1, "request_timeout_s": "20s",
                         "max_duration_s": "60s"},
            "repetitions": repetitions, **extra}


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def wait_final(client, flow_run_id: str, timeout_s: float = 150) -> dict:
    """Polls the API until the flow run is final; returns it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fr = client.get(f"/flow_runs/{flow_run_id}").json()
        if fr["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return fr
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout_s}s: {fr['state']}")


def deployment_id(client, name: str) -> str:
    flow, dep = name.split("/")
    response = client.get(f"/deployments/name/{flow}/{dep}")
    response.raise_for_status()
    return response.json()["id"]



