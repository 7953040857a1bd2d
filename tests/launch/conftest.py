"""The ``launcher_harness`` fixture: the contract suite runs once per launcher (process, endpoint,
docker). The docker harness skips without an engine or the simulator image, but FAILS when
``CI=true`` (tests/docker/conftest.py)."""

from __future__ import annotations

import pytest

from tests.docker.conftest import docker_client, sim_image  # noqa: F401 - fixtures for the docker harness
from tests.launch.harness import DockerHarness, EndpointHarness, Harness, ReplicatedHarness

LAUNCHERS = [
    pytest.param("process", marks=pytest.mark.integration),
    pytest.param("endpoint", marks=pytest.mark.integration),
    pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.integration]),
    pytest.param("replicated", marks=pytest.mark.integration),
]


@pytest.fixture(params=LAUNCHERS)
def launcher_harness(request, tmp_path):
    if request.param == "docker":
        harness = DockerHarness(tmp_path, request.getfixturevalue("docker_client"),
                                request.getfixturevalue("sim_image"))
    elif request.param == "replicated":
        harness = ReplicatedHarness(tmp_path)
    elif request.param == "endpoint":
        harness = EndpointHarness(tmp_path)
    else:
        harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()
        assert harness.leftovers() == [], f"{harness.kind} launcher left {harness.leftovers()}"
