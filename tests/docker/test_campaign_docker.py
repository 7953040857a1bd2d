"""A campaign whose backend is the simulator in a container, through `benchflow run` as a user runs
it (an ephemeral Prefect server, SQLite and local artifacts under a temporary BENCHFLOW_HOME):
end to end, secrets kept out of logs and rows, and no container left after a cancellation."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from benchflow.spec import load_spec
from flows.backend_cells import restart_due
from tests.docker.conftest import REPO

SPEC = REPO / "deployments" / "campaigns" / "docker-sim.yaml"
SECRET = "sekret-value-123"


def user_env(tmp_path: Path) -> dict[str, str]:
    """The embedded default under tmp_path, an ephemeral Prefect server, and a token in the environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "BENCHFLOW_DATABASE_URL", "BENCHFLOW_ARTIFACTS")}
    env.update(BENCHFLOW_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"), HF_TOKEN=SECRET,
               PREFECT_LOGGING_LEVEL="INFO",
               # Prefect's default of 20 s is too short for its ephemeral server on a loaded machine
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    return env


def run_cli(args: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchflow", *args], cwd=REPO, env=env, text=True,
                            stdin=subprocess.DEVNULL, **popen)


def campaign_containers(client, campaign_id: str) -> list:
    return client.containers.list(all=True, filters={"label": [f"benchflow.campaign={campaign_id}"]})


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.usefixtures("sim_image")
def test_campaign_runs_end_to_end_in_a_container_without_leaking_the_token(docker_client, campaign_id, tmp_path):
    env = user_env(tmp_path)
    proc = run_cli(["run", str(SPEC), "--campaign-id", campaign_id], env, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"{out}\n{err}"
    assert "4/4 cells completed, 0 failed" in out
    assert campaign_containers(docker_client, campaign_id) == []

    db = sqlite3.connect(tmp_path / "home" / "benchflow.db")
    try:
        backends = db.execute("select name, image, image_digest from backends where campaign_id = ?",
                              (campaign_id,)).fetchall()
        statuses = db.execute("select status from cells where campaign_id = ?", (campaign_id,)).fetchall()
    finally:
        db.close()
    assert statuses == [("completed",)] * 4
    ((name, image, digest),) = backends
    assert (name, image) == ("sim-docker", "benchflow/sim:latest") and digest.startswith("sha256:")

    # one long-running container served every cell; its whole log was kept at teardown
    (log_file,) = (tmp_path / "home" / "runs" / campaign_id / "logs").glob("backend-sim-docker.log")
    log_text = log_file.read_text()
    assert log_text.count("=== container ") == 1 and "Shutting down" in log_text
    assert f"image benchflow/sim:latest {digest}: container exited with code 0 ===" in log_text

    assert SECRET not in out and SECRET not in err
    assert "'HF_TOKEN': '***'" in err  # the create arguments were logged, redacted
    assert files_containing(tmp_path / "home", SECRET.encode()) == []  # rows, artifacts, logs
    assert files_containing(tmp_path / "prefect", SECRET.encode()) == []  # Prefect's own database


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    """Polls ``predicate`` until it returns something true (and returns that), failing after the timeout
    or as soon as ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"benchflow run exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


def served_requests(container) -> int:
    """Requests the simulator in ``container`` has completed so far (0 while it cannot be reached)."""
    import docker

    try:
        container.reload()
        port = container.ports["8000/tcp"][0]["HostPort"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:  # noqa: S310
            text = resp.read().decode()
    except docker.errors.NotFound:
        pytest.fail(f"container {container.name} was removed before it served a request")
    except (OSError, KeyError, IndexError, TypeError):
        return 0
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("vllm:request_success_total")))


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.parametrize("stage", ["mid-cell", "while-starting"])
@pytest.mark.usefixtures("sim_image")
def test_terminating_the_run_leaves_no_container(docker_client, campaign_id, tmp_path, stage):
    spec = yaml.safe_load(SPEC.read_text())
    spec["repetitions"] = 1
    spec["workload"].update(load_points=[{"concurrency": 2}], max_requests=100000, max_duration_s="60s")
    if stage == "while-starting":
        spec["backends"][0]["engine_args"]["startup-delay-s"] = 50  # /health answers 503 while "loading"
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(spec))
    with open(tmp_path / "run.log", "w") as log:
        proc = run_cli(["run", str(path), "--campaign-id", campaign_id], user_env(tmp_path), stdout=log,
                       stderr=subprocess.STDOUT)
        try:
            (container,) = wait_for(lambda: campaign_containers(docker_client, campaign_id), 150,
                                    "the backend container", proc)
            if stage == "mid-cell":
                wait_for(lambda: served_requests(container) > 0, 30, "the cell's first requests", proc)
            else:
                # the engine is up and "loading" (so its SIGTERM handler is installed) while the run waits for it
                wait_for(lambda: b"Loading model" in container.logs(), 60, "the engine to start loading", proc)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail("benchflow run did not end within 30 s of SIGTERM; its log ends with:\n"
                            + (tmp_path / "run.log").read_text()[-6000:])
        finally:
            proc.kill()
    wait_for(lambda: campaign_containers(docker_client, campaign_id) == [], 15, "the container's removal")
    assert "Crashed" in (tmp_path / "run.log").read_text()
    # the engine was stopped gracefully (SIGTERM) and its log captured before the container was removed
    log_file = tmp_path / "home" / "runs" / campaign_id / "logs" / "backend-sim-docker.log"
    assert "container exited with code 0" in log_file.read_text()
    assert "Shutting down (signal received)" in log_file.read_text()


def test_restart_policy_redeploys_between_the_right_cells():
    spec = yaml.safe_load(SPEC.read_text())
    spec["repetitions"] = 2
    cells = load_spec(spec).cells()

    def restarts(policy: str) -> list[tuple[str, int]]:
        return [(c.load_point.label, c.repetition) for prev, c in zip(cells, cells[1:]) if restart_due(policy, prev, c)]

    assert [(c.load_point.label, c.repetition) for c in cells] == [("c2", 0), ("c8", 0), ("c2", 1), ("c8", 1)]
    assert restarts("never") == []
    assert restarts("per_repetition") == [("c2", 1)]
    assert restarts("per_cell") == [("c8", 0), ("c2", 1), ("c8", 1)]

