"""The docker launcher (benchflow/launch/docker.py) on a real engine with the simulator image: deploy
through the Prefect task inside a flow, readiness, labels, secrets, fail-fast start-up, teardown that
keeps the log, leftovers. (The launcher contract itself is tests/launch/contract.py.)"""

from __future__ import annotations

import json
import logging
import urllib.request

import pytest

from benchflow.errors import BackendStartError
from benchflow.launch.docker import DockerLauncher
from benchflow.launch.docker_render import render_container
from benchflow.spec import SimBackend
from tests.docker.helpers import container_exists

pytestmark = [pytest.mark.docker, pytest.mark.integration]
MODEL = "sim-launcher-test"
SECRET = "sekret-value-123"


@pytest.fixture
def prefect_api(prefect_harness):
    """The session's one Prefect harness (two harnesses side by side break Prefect's event workers)."""
    yield


def sim_backend(name: str = "sim", **fields) -> SimBackend:
    fields.setdefault("ready_timeout_s", 45)
    fields.setdefault("stop_grace_s", 5)
    fields.setdefault("pull_policy", "never")
    return SimBackend(name=name, kind="sim", launcher="docker", **fields)


def campaign_containers(client, campaign_id: str) -> list:
    return client.containers.list(all=True, filters={"label": [f"benchflow.campaign={campaign_id}"]})


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def test_deployed_container_serves_then_teardown_keeps_its_log_and_removes_it(
        prefect_api, docker_client, sim_image, campaign_id, tmp_path, monkeypatch):
    from prefect import flow
    from prefect.runtime import flow_run

    from tasks.backend import deploy_backend

    monkeypatch.setenv("HF_TOKEN", SECRET)
    backend = sim_backend("sim-a", engine_args={"max-num-seqs": 4})
    seen: dict = {}

    @flow
    def deploy_and_stop() -> None:
        launcher = deploy_backend(backend, MODEL, campaign_id, tmp_path / "logs", tmp_path / "processes")
        container = docker_client.containers.get(launcher.container_id)
        seen.update(run_id=str(flow_run.id), launcher=launcher, labels=container.labels,
                    env=container.attrs["Config"]["Env"], bindings=container.attrs["HostConfig"]["PortBindings"],
                    models=get_json(f"{launcher.url}/v1/models"), alive=launcher.alive(),
                    log_before=launcher.logs())
        launcher.stop(5)
        launcher.stop(5)  # idempotent

    records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(record.getMessage())
    run_log = logging.getLogger("prefect.task_runs")  # the launcher logs through the task's run logger
    run_log.addHandler(handler)
    try:
        deploy_and_stop()
    finally:
        run_log.removeHandler(handler)
    launcher = seen["launcher"]
    assert any("creating container" in r for r in records), records
    assert not any(SECRET in r for r in records)
    assert [m["id"] for m in seen["models"]["data"]] == [MODEL]
    assert seen["alive"] is None
    (binding,) = seen["bindings"]["8000/tcp"]
    assert binding["HostIp"] == "127.0.0.1" and launcher.url == f"http://127.0.0.1:{binding['HostPort']}"
    assert seen["labels"]["benchflow.campaign"] == campaign_id
    assert seen["labels"]["benchflow.backend"] == "sim-a"
    assert seen["labels"]["benchflow.run"] == seen["run_id"]
    assert f"HF_TOKEN={SECRET}" in seen["env"]  # the token reaches the engine...
    assert SECRET not in launcher.logs() and SECRET not in (tmp_path / "logs" / "backend-sim-a.log").read_text()
    assert launcher.image_digest == docker_client.images.get(sim_image).id  # a local build: its image id
    # teardown: gone, with the full log (including the engine's shutdown) kept
    assert not container_exists(docker_client, launcher.container_id)
    assert launcher.logs().startswith(seen["log_before"][:200]) and "Shutting down" in launcher.logs()
    assert launcher.alive() == "container exited with code 0"
    log_file = (tmp_path / "logs" / "backend-sim-a.log").read_text()
    assert log_file.count("=== container ") == 1 and "Shutting down" in log_file


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"engine_args": {"gpu-memory-utilization": 0.01}}, 1, "No available memory for the cache blocks"),
        ({"command": ["--host", "{host}", "--port", "{port}", "--model", "{model}", "--no-such-flag"]}, 2,
         "unrecognized arguments: --no-such-flag"),
    ],
    ids=["out-of-memory", "unknown-flag"],
)
def test_container_that_exits_at_start_fails_with_its_exit_code_and_log_tail(
        prefect_api, docker_client, sim_image, campaign_id, tmp_path, fields, code, says):
    from prefect import flow

    from tasks.backend import deploy_backend

    @flow
    def deploy() -> None:
        deploy_backend(sim_backend("dies", **fields), MODEL, campaign_id, tmp_path / "logs", tmp_path / "processes")

    with pytest.raises(BackendStartError) as info:
        deploy()
    assert f"container exited with code {code}" in str(info.value)  # fails fast, not after the timeout
    assert says in info.value.log_tail
    assert campaign_containers(docker_client, campaign_id) == []
    assert says in (tmp_path / "logs" / "backend-dies.log").read_text()


def test_it_logs_snapshots_while_the_engine_loads(docker_client, sim_image, campaign_id, tmp_path, caplog):
    launcher = DockerLauncher(sim_backend("slow", engine_args={"startup-delay-s": 2}), MODEL,
                              tmp_path / "logs" / "backend-slow.log", owner=campaign_id)
    launcher.snapshot_every_s = 0.5
    try:
        with caplog.at_level(logging.INFO, logger="benchflow.launch.docker"):
            launcher.start()
            launcher.ready(30)
        snapshots = [r.getMessage() for r in caplog.records if "still starting" in r.getMessage()]
        assert snapshots and "container log tail" in snapshots[0]
        assert "resolved config" in snapshots[-1]  # the tail of the engine's own log
    finally:
        launcher.stop(2)
    assert campaign_containers(docker_client, campaign_id) == []


def test_missing_image_with_pull_policy_never_creates_nothing(docker_client, campaign_id, tmp_path):
    backend = sim_backend("nope", image="benchflow/no-such-image", tag="never-built")
    launcher = DockerLauncher(backend, MODEL, tmp_path / "logs" / "backend-nope.log", owner=campaign_id)
    with pytest.raises(BackendStartError, match="benchflow/no-such-image:never-built is not on the Docker host "
                                                "and pull_policy is never"):
        launcher.start()
    launcher.stop(0)
    assert campaign_containers(docker_client, campaign_id) == []


@pytest.mark.parametrize(("gpus", "expected"), [("all", {"Count": -1}), ([0, 1], {"DeviceIDs": ["0", "1"]})])
def test_gpu_selection_reaches_the_engine_as_device_requests(
        docker_client, sim_image, campaign_id, tmp_path, gpus, expected):
    launcher = DockerLauncher(sim_backend("gpu", gpus=gpus), MODEL, tmp_path / "logs" / "backend-gpu.log",
                              owner=campaign_id)
    try:
        launcher.create()
        (request,) = docker_client.api.inspect_container(launcher.container_id)["HostConfig"]["DeviceRequests"]
        assert request["Driver"] == "nvidia" and request["Capabilities"] == [["gpu"]]
        assert {k: request[k] for k in expected} == expected
        try:
            launcher.start()  # succeeds only on a GPU host with the NVIDIA container toolkit
        except BackendStartError as e:
            assert "nvidia" in str(e)
    finally:
        launcher.stop(0)
    assert campaign_containers(docker_client, campaign_id) == []


def test_leftovers_of_a_crashed_run_are_removed(prefect_api, docker_client, sim_image, campaign_id, tmp_path):
    from prefect import flow

    from tasks.backend import deploy_backend
    from tasks.docker import cleanup_campaign_containers

    backend = sim_backend("again")
    stale_kwargs = render_container(backend, model=MODEL, campaign_id=campaign_id, host_port=None).create_kwargs
    stale_kwargs.pop("ports")
    stale = docker_client.containers.create(**stale_kwargs)  # same name and labels, as a crash leaves it
    other = docker_client.containers.create(**{**stale_kwargs, "name": stale_kwargs["name"] + "-other",
                                               "labels": {**stale_kwargs["labels"], "benchflow.backend": "x"}})

    @flow
    def redeploy() -> str:
        launcher = deploy_backend(backend, MODEL, campaign_id, tmp_path / "logs", tmp_path / "processes")
        launcher.stop(2)
        return launcher.container_id

    new_id = redeploy()
    assert new_id != stale.id and not container_exists(docker_client, stale.id)
    assert container_exists(docker_client, other.id)  # another backend's container is left to its own deploy
    assert cleanup_campaign_containers(campaign_id, grace_s=0) == [other.name]
    assert campaign_containers(docker_client, campaign_id) == []


def test_hf_token_comes_from_the_secret_block_before_the_environment(prefect_api, monkeypatch):
    from prefect.blocks.system import Secret

    from tasks.docker import HF_TOKEN_BLOCK, hf_token

    monkeypatch.setenv("HF_TOKEN", "from-the-environment")
    assert hf_token() == "from-the-environment"
    Secret(value="from-the-block").save(HF_TOKEN_BLOCK, overwrite=True)
    try:
        assert hf_token() == "from-the-block"
    finally:
        Secret.delete(HF_TOKEN_BLOCK)
    monkeypatch.delenv("HF_TOKEN")
    assert hf_token() is None


@pytest.mark.parametrize(("policy", "pulls"), [("always", True), ("if-missing", False)])
def test_pull_policy_always_pulls_even_a_local_image_and_if_missing_does_not(
        docker_client, sim_image, campaign_id, tmp_path, policy, pulls):
    # a local tag whose registry (127.0.0.1:1) refuses connections: a pull fails at once, offline
    repository, tag = "127.0.0.1:1/benchflow/sim", f"pull-{campaign_id}"
    docker_client.images.get(sim_image).tag(repository, tag)
    backend = sim_backend("pulled", image=repository, tag=tag, pull_policy=policy)
    launcher = DockerLauncher(backend, MODEL, tmp_path / "logs" / "backend-pulled.log", owner=campaign_id)
    try:
        if pulls:
            with pytest.raises(BackendStartError, match=rf"cannot pull image {repository}:{tag} \(pull_policy always\)"):
                launcher.start()
            assert campaign_containers(docker_client, campaign_id) == []
        else:
            launcher.start()
            assert launcher.image_digest == docker_client.images.get(sim_image).id
    finally:
        launcher.stop(0)
        docker_client.images.remove(f"{repository}:{tag}")


def test_a_missing_image_is_pulled_when_pull_policy_is_if_missing(docker_client, campaign_id, tmp_path):
    backend = sim_backend("missing", image="127.0.0.1:1/benchflow/no-such-image", tag="x", pull_policy="if-missing")
    launcher = DockerLauncher(backend, MODEL, tmp_path / "logs" / "backend-missing.log", owner=campaign_id)
    with pytest.raises(BackendStartError, match=r"cannot pull image 127.0.0.1:1/benchflow/no-such-image:x") as info:
        launcher.start()
    assert info.value.transient  # the registry did not answer: worth a retry
    launcher.stop(0)
    assert campaign_containers(docker_client, campaign_id) == []
