"""Base job templates of the work pools, rendered the way the workers render them."""

from __future__ import annotations

import asyncio
import json
import types

from tests.deploy.stack import REPO

POOLS = REPO / "deployments" / "work-pools"


def render(config_cls, template: dict, values: dict):
    # a stand-in client: these templates hold no block or variable references to resolve
    return asyncio.run(config_cls.from_template_and_values(template, values, client=types.SimpleNamespace()))


def test_the_docker_pool_maps_gpu_ids_to_device_requests_with_shm_and_ipc_defaults():
    from docker.types import HostConfig
    from prefect_docker.worker import DockerWorkerJobConfiguration

    template = json.loads((POOLS / "docker.json").read_text())
    config = render(DockerWorkerJobConfiguration, template, {"gpu_ids": ["0", "3"]})
    kwargs = config.container_create_kwargs
    assert kwargs["device_requests"] == [{"driver": "nvidia", "device_ids": ["0", "3"], "capabilities": [["gpu"]]}]
    assert kwargs["shm_size"] == "16g" and kwargs["ipc_mode"] == "host"
    assert config.network_mode == "host" and "/var/run/docker.sock:/var/run/docker.sock" in config.volumes
    host = HostConfig(version="1.45", **kwargs)  # what docker-py sends to the engine
    assert host["DeviceRequests"][0]["DeviceIDs"] == ["0", "3"] and host["DeviceRequests"][0]["Driver"] == "nvidia"
    assert host["ShmSize"] == 16 * 2**30 and host["IpcMode"] == "host"


def test_docker_pool_defaults_and_overrides():
    from prefect_docker.worker import DockerWorkerJobConfiguration

    template = json.loads((POOLS / "docker.json").read_text())
    default = render(DockerWorkerJobConfiguration, template, {})
    assert default.container_create_kwargs["device_requests"][0]["device_ids"] == ["all"]
    private = render(DockerWorkerJobConfiguration, template, {"ipc_mode": "private", "shm_size": "32g"})
    assert private.container_create_kwargs["ipc_mode"] == "private"
    assert private.container_create_kwargs["shm_size"] == "32g"
    assert default.image == "benchflow/worker:latest"
    assert default.image_pull_policy == "IfNotPresent"  # a locally built image is not pulled


def test_the_process_pool_template_renders_for_the_process_worker():
    from prefect.workers.process import ProcessJobConfiguration

    template = json.loads((POOLS / "process.json").read_text())
    config = render(ProcessJobConfiguration, template, {"env": {"BENCHFLOW_GPU_SLOTS": "strict"}})
    assert config.env["BENCHFLOW_GPU_SLOTS"] == "strict" and config.env["PYTHONUNBUFFERED"] == "1"
