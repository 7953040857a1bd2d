"""Finds and removes leftover benchflow containers (label ``benchflow.managed=true``).

A container is left over when a run crashed or was killed before its teardown. Removal stops a
running container with a grace period (SIGTERM, then SIGKILL) so the engine can flush, then removes
it with its anonymous volumes. A container that disappears meanwhile is not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import docker

from benchflow.errors import BenchflowError
from benchflow.launch.docker_render import BACKEND_LABEL, CAMPAIGN_LABEL, CELL_LABEL, MANAGED_LABEL, RUN_LABEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leftover:
    """One benchflow container found on the engine."""

    id: str
    name: str
    status: str
    campaign_id: str
    backend: str
    cell_id: str

    def describe(self) -> str:
        return f"{self.name} ({self.id[:12]}, {self.status}, campaign {self.campaign_id or '-'}, backend {self.backend or '-'})"


def connect(timeout_s: float = 10.0) -> Any:
    """A docker-py client from the environment (``DOCKER_HOST`` or the local socket), checked with a
    ping. Raises :class:`BenchflowError` with a one-line reason when no engine answers."""
    try:
        client = docker.from_env(timeout=max(1, int(timeout_s)))
        client.ping()
    except docker.errors.DockerException as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BenchflowError(f"no Docker engine reachable ({reason}); start dockerd or set DOCKER_HOST") from e
    return client


def find_leftovers(client: Any, campaign_id: str | None = None, *, run_id: str | None = None) -> list[Leftover]:
    """Every container labelled ``benchflow.managed=true``, running or not; only ``campaign_id``'s
    and/or only those started by ``run_id`` (label ``benchflow.run``) when given."""
    labels = [f"{MANAGED_LABEL}=true"]
    if campaign_id:
        labels.append(f"{CAMPAIGN_LABEL}={campaign_id}")
    if run_id:
        labels.append(f"{RUN_LABEL}={run_id}")
    containers = client.containers.list(all=True, filters={"label": labels})
    found = []
    for c in containers:
        c_labels = c.labels or {}
        found.append(Leftover(
            id=c.id, name=c.name, status=c.status,
            campaign_id=c_labels.get(CAMPAIGN_LABEL, ""), backend=c_labels.get(BACKEND_LABEL, ""),
            cell_id=c_labels.get(CELL_LABEL, ""),
        ))
    return sorted(found, key=lambda x: (x.campaign_id, x.name))


def remove_container(client: Any, container_id: str, grace_s: float = 10.0) -> bool:
    """Stops (``grace_s`` before SIGKILL) and removes one container. False when it was already gone."""
    try:
        container = client.containers.get(container_id)
        if container.status in ("running", "restarting", "paused"):
            container.stop(timeout=max(0, int(grace_s)))
        container.remove(v=True, force=True)
    except docker.errors.NotFound:
        log.debug("container %s was already gone", container_id)
        return False
    except docker.errors.APIError as e:
        if e.status_code == 404 or "removal of container" in str(e) and "already in progress" in str(e):
            return False
        raise BenchflowError(f"could not remove container {container_id[:12]}: {e.explanation or e}") from e
    return True


def remove_leftovers(
    client: Any, campaign_id: str | None = None, grace_s: float = 10.0, *,
    run_id: str | None = None, dry_run: bool = False,
) -> list[Leftover]:
    """Removes every leftover benchflow container (only ``campaign_id``'s / ``run_id``'s when
    given) and returns those it removed; with ``dry_run`` it only returns what it would remove."""
    found = find_leftovers(client, campaign_id, run_id=run_id)
    if dry_run:
        return found
    removed = []
    for leftover in found:
        if remove_container(client, leftover.id, grace_s):
            log.info("removed leftover container %s", leftover.describe())
            removed.append(leftover)
    return removed


def remove_leftovers_for_run(run_id: str, grace_s: float = 10.0, client: Any = None) -> list[Leftover]:
    """For a flow's crash/cancel hook: removes the containers labelled ``benchflow.run=run_id``.
    Connects from the environment when no client is given (:class:`BenchflowError` without an engine)."""
    own = client is None
    client = connect() if own else client
    try:
        return remove_leftovers(client, grace_s=grace_s, run_id=run_id)
    finally:
        if own:
            client.close()
