"""``benchflow cleanup`` and ``remove_leftovers`` on a real engine (sleeping containers of the local
base image stand in for backends), plus the error a user sees without an engine."""

from __future__ import annotations

import pytest

from benchflow.launch.docker_cleanup import find_leftovers, remove_leftovers
from benchflow.launch.docker_render import render_container
from benchflow.spec import SimBackend
from tests.docker.conftest import TEST_BASE_IMAGE, missing
from tests.docker.helpers import benchflow_cli, container_exists


def test_cleanup_without_an_engine_says_so_in_one_line():
    result = benchflow_cli("cleanup", env={"DOCKER_HOST": "unix:///nonexistent/benchflow-test.sock"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no Docker engine reachable")
    assert "Traceback" not in result.stderr


@pytest.fixture
def base_image(docker_client) -> str:
    import docker

    try:
        docker_client.images.get(TEST_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"image {TEST_BASE_IMAGE} is missing (build it with docker/build-test-base.sh)")
    return TEST_BASE_IMAGE


def start_sleeper(client, image: str, campaign_id: str, name: str, *, running: bool = True):
    """A benchflow-labelled container that only sleeps, rendered like a real backend."""
    repo, tag = image.split(":")
    backend = SimBackend(name=name, kind="sim", launcher="docker", image=repo, tag=tag, command=["sleep", "300"])
    kwargs = render_container(backend, model="none", campaign_id=campaign_id, cell_id="cell-1").create_kwargs
    kwargs.pop("ports")
    container = client.containers.create(**kwargs)
    if running:
        container.start()
    return container


@pytest.mark.docker
@pytest.mark.integration
def test_cleanup_removes_only_the_given_campaign(docker_client, base_image, campaign_id, request):
    other_id = campaign_id + "-other"
    request.addfinalizer(lambda: remove_leftovers(docker_client, other_id, grace_s=0))
    mine = start_sleeper(docker_client, base_image, campaign_id, "mine")
    stopped = start_sleeper(docker_client, base_image, campaign_id, "mine-stopped", running=False)
    other = start_sleeper(docker_client, base_image, other_id, "theirs")

    dry = benchflow_cli("cleanup", "--campaign", campaign_id, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout and mine.name in dry.stdout and stopped.name in dry.stdout
    assert other.name not in dry.stdout
    assert container_exists(docker_client, mine.id) and container_exists(docker_client, stopped.id)

    result = benchflow_cli("cleanup", "--campaign", campaign_id, "--grace-s", "5")
    assert result.returncode == 0, result.stderr
    assert f"removed {mine.name}" in result.stdout and f"removed {stopped.name}" in result.stdout
    assert not container_exists(docker_client, mine.id)
    assert not container_exists(docker_client, stopped.id)
    assert container_exists(docker_client, other.id)
    assert [x.name for x in find_leftovers(docker_client, other_id)] == [other.name]

    again = benchflow_cli("cleanup", "--campaign", campaign_id)
    assert again.returncode == 0 and "no leftover benchflow containers" in again.stdout


@pytest.mark.docker
@pytest.mark.integration
def test_remove_leftovers_skips_containers_already_gone(docker_client, base_image, campaign_id):
    container = start_sleeper(docker_client, base_image, campaign_id, "gone")
    container.remove(force=True)
    assert remove_leftovers(docker_client, campaign_id, grace_s=0) == []
    unlabelled = docker_client.containers.create(base_image, ["sleep", "300"], labels={"benchflow.campaign": campaign_id})
    try:
        assert find_leftovers(docker_client, campaign_id) == []  # not managed by benchflow: never touched
    finally:
        unlabelled.remove(force=True)


@pytest.mark.docker
@pytest.mark.integration
def test_remove_leftovers_for_run_removes_only_that_runs_containers(docker_client, base_image, campaign_id):
    from benchflow.launch.docker_cleanup import remove_leftovers_for_run

    repo, tag = base_image.split(":")
    backend = SimBackend(name="b", kind="sim", launcher="docker", image=repo, tag=tag, command=["sleep", "300"])
    started = []
    for run_id in ("run-a", "run-b"):
        kwargs = render_container(backend, model="none", campaign_id=campaign_id, cell_id=run_id,
                                  run_id=run_id).create_kwargs
        kwargs.pop("ports")
        started.append(docker_client.containers.run(detach=True, **kwargs))
    removed = remove_leftovers_for_run("run-a", grace_s=5)
    assert [x.id for x in removed] == [started[0].id]
    assert not container_exists(docker_client, started[0].id)
    assert container_exists(docker_client, started[1].id)
