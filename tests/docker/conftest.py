"""Docker-engine fixtures.

``docker_client`` skips (with the reason) on a developer machine without a reachable engine, but
FAILS when ``CI=true``: in CI the Docker tests never skip (``.ci/docker-setup.sh`` brings the engine
and the images up first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIM_IMAGE = "benchflow/sim:latest"
TEST_BASE_IMAGE = "benchflow/test-base:bookworm"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skips on a developer machine; fails in CI."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}; Docker tests do not skip in CI (run .ci/docker-setup.sh)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as e:
        missing(f"no Docker engine is reachable ({str(e).splitlines()[0][:200]})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sim_image(docker_client) -> str:
    """benchflow/sim:latest, rebuilt first when its sources changed and the local base exists
    (docker/build-image.sh is a no-op when the image is up to date)."""
    import docker

    if shutil.which("docker") and _image_exists(docker_client, TEST_BASE_IMAGE):
        build = subprocess.run(
            ["bash", str(REPO / "docker" / "build-image.sh"), "sim", "--base-image", TEST_BASE_IMAGE, "--offline"],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        )
        if build.returncode != 0:
            pytest.fail(f"building {SIM_IMAGE} failed:\n{build.stdout}\n{build.stderr}", pytrace=False)
    try:
        docker_client.images.get(SIM_IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"image {SIM_IMAGE} is missing (build it with .ci/docker-setup.sh or make sim-image)")
    return SIM_IMAGE


def _image_exists(client, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


@pytest.fixture
def campaign_id(docker_client):
    """A fresh campaign id; every container labelled with it is removed after the test."""
    from benchflow.launch.docker_cleanup import remove_leftovers

    cid = f"test-{uuid.uuid4().hex[:12]}"
    yield cid
    remove_leftovers(docker_client, cid, grace_s=0)
