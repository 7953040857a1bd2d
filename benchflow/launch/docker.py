"""The ``docker`` launcher: one serving backend in one container, through the Docker SDK (docker-py).

The library never imports Prefect, so this launcher talks to the engine with docker-py directly
(prefect-docker's container tasks are thin wrappers around the same calls; it stays a dependency
for the Docker work pools only). See :mod:`benchflow.launch.base` for the launcher contract.

* The image is used from the local engine or pulled by the backend's ``pull_policy``
  (``if-missing`` | ``always`` | ``never``); its digest is kept in ``image_digest`` (the
  registry digest ``sha256:...`` when the image came from a registry, else the local image id).
* The container is created from :func:`benchflow.launch.docker_render.render_container`: the
  command is a list, the port is published on a free port of ``127.0.0.1`` (unless host
  networking), GPUs are device requests, and the labels name the campaign, the backend and the
  run, so that :func:`benchflow.launch.docker_cleanup.remove_leftovers` finds leftovers.
* Secrets (``HF_TOKEN``) are passed in by the caller as ``env_extra`` (the Prefect Secret block is
  looked up in ``tasks/``); only redacted create arguments are ever logged.
* Readiness is :func:`benchflow.launch.readiness.wait_ready`; a container that exits while
  starting fails at once with its exit code and log tail. Log snapshots are logged about every
  ``snapshot_every_s`` seconds while the engine loads.
* ``stop()`` stops with the grace period (``docker stop``: SIGTERM, then SIGKILL), keeps the FULL
  log (``logs()`` still returns it), appends it to ``log_path``, then removes the container. It is
  idempotent and never raises.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import docker
from docker.utils import parse_repository_tag

from benchflow.errors import BackendStartError, SpecError
from benchflow.launch.base import tail
from benchflow.launch.docker_cleanup import remove_container
from benchflow.launch.docker_render import (
    BACKEND_LABEL, CAMPAIGN_LABEL, MANAGED_LABEL, ContainerPlan, redact_create_kwargs, render_container,
)
from benchflow.launch.process import free_port
from benchflow.launch.readiness import wait_ready

log = logging.getLogger(__name__)

HF_TOKEN_ENV = "HF_TOKEN"


def _reason(err: Exception) -> str:
    text = getattr(err, "explanation", None) or str(err) or type(err).__name__
    return str(text).splitlines()[0]


def docker_client(timeout_s: float = 60.0) -> Any:
    """A docker-py client from the environment (``DOCKER_HOST`` or the local socket), checked with a
    ping; :class:`BackendStartError` (transient) when no engine answers."""
    try:
        client = docker.from_env(timeout=max(1, int(timeout_s)))
        client.ping()
    except docker.errors.DockerException as e:
        raise BackendStartError(f"no Docker engine reachable ({_reason(e)}); start dockerd or set DOCKER_HOST",
                                transient=True) from e
    return client


def ensure_image(client: Any, ref: str, pull_policy: str, logger: Any = log) -> Any:
    """The docker ``Image`` for ``ref``, pulled as ``pull_policy`` says."""
    if pull_policy != "always":
        try:
            return client.images.get(ref)
        except docker.errors.ImageNotFound:
            if pull_policy == "never":
                raise BackendStartError(
                    f"image {ref} is not on the Docker host and pull_policy is never; build or load it "
                    "first (see `docker images`), or set pull_policy: if-missing") from None
    repository, tag = parse_repository_tag(ref)
    logger.info("pulling image %s (pull_policy %s)", ref, pull_policy)
    try:
        client.images.pull(repository, tag=tag or "latest")
        return client.images.get(ref)
    except docker.errors.DockerException as e:
        status = getattr(e, "status_code", None)
        raise BackendStartError(f"cannot pull image {ref} (pull_policy {pull_policy}): {_reason(e)}",
                                transient=status is None or status >= 500) from e


def image_digest(image: Any, ref: str) -> str:
    """The registry digest (``sha256:...``) of ``ref``'s repository when known, else the image id."""
    repository = parse_repository_tag(ref)[0]
    digests = list(image.attrs.get("RepoDigests") or [])
    mine = [d for d in digests if d.split("@", 1)[0] == repository] or digests
    return mine[0].split("@", 1)[1] if mine else image.id


class DockerLauncher:
    """A backend in a container."""

    #: How often a log snapshot is logged while the engine is still starting.
    snapshot_every_s = 30.0

    def __init__(self, backend: Any, model: str, log_path: Path | str, *, owner: str = "", run_id: str = "",
                 cell_id: str = "", env_extra: Mapping[str, str] | None = None, client: Any = None,
                 logger: Any = None):
        #: Where the launcher logs (a Prefect run logger when a task passes one in); never secrets.
        self.log: Any = logger or log
        self.backend = backend
        self.name = str(backend.name)
        self.owner = owner
        self.log_path = Path(log_path)
        self.plan: ContainerPlan = _plan(backend, model, owner, cell_id, run_id)
        self.env_extra = {str(k): str(v) for k, v in (env_extra or {}).items()}
        self.url: str | None = None
        self.container_id: str | None = None
        self.image_id: str | None = None
        self.image_digest: str | None = None
        self.exit_reason: str | None = None
        self._client: Any = client
        self._last_logs = ""
        self._final_logs: str | None = None

    @property
    def container_name(self) -> str:
        return str(self.plan.create_kwargs["name"])

    @property
    def image(self) -> str:
        return self.plan.image

    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # -- start --------------------------------------------------------------------------------
    def create(self) -> str:
        """Resolves the image, removes this backend's leftovers and creates the container (not started)."""
        client = self.client()
        image = ensure_image(client, self.plan.image, self.plan.pull_policy, self.log)
        self.image_id, self.image_digest = image.id, image_digest(image, self.plan.image)
        _remove_stale(client, self.owner, self.name, self.log)
        kwargs = self.create_kwargs()
        self.log.info("backend %s: creating container %s from %s (%s): %s", self.name, self.container_name,
                 self.plan.image, self.image_digest, redact_create_kwargs(kwargs))
        try:
            container = client.containers.create(**kwargs)
        except docker.errors.DockerException as e:
            raise BackendStartError(f"cannot create container for backend {self.name}: {_reason(e)}") from e
        self.container_id = container.id
        return container.id

    def create_kwargs(self) -> dict[str, Any]:
        """The rendered create arguments plus ``env_extra`` (never log these; log ``plan.redacted()``).
        A variable the spec's ``env`` sets wins over ``env_extra``."""
        kwargs = dict(self.plan.create_kwargs)
        env = dict(kwargs.get("environment") or {})
        if HF_TOKEN_ENV in env:
            self.log.warning("backend %s: %s is set in the spec's env, where it is stored in plain text; pass it "
                        "from a secret store or the %s environment variable instead", self.name, HF_TOKEN_ENV,
                        HF_TOKEN_ENV)
        kwargs["environment"] = {**self.env_extra, **env}
        return kwargs

    def start(self) -> str:
        if self.container_id is None:
            self.create()
        try:
            self.client().api.start(self.container_id)
        except docker.errors.DockerException as e:
            reason = _reason(e)
            self.stop(0)
            busy = "port is already allocated" in reason or "address already in use" in reason
            raise BackendStartError(f"cannot start container for backend {self.name}: {reason}",
                                    log_tail=tail(self.logs()), transient=busy) from e
        self.url = self.plan.base_url
        self.log.info("backend %s: container %s starting at %s", self.name, self.container_name, self.url)
        return self.url

    def ready(self, timeout_s: float) -> None:
        assert self.url, "start() first"
        took = wait_ready(self.url, timeout_s, alive=self.alive, logs=self.logs, on_wait=self._snapshot,
                          snapshot_every_s=self.snapshot_every_s)
        self.log.info("backend %s ready at %s after %.1fs (container %s)", self.name, self.url, took,
                 self.container_name)

    def _snapshot(self, elapsed_s: float, why: str) -> None:
        self.log.info("backend %s still starting after %.0fs (%s); container log tail:\n%s", self.name,
                 elapsed_s, why, tail(self.logs(), 10))

    # -- while it runs -------------------------------------------------------------------------
    def alive(self) -> str | None:
        if self.container_id is None:
            return "not started"
        if self._final_logs is not None:
            return self.exit_reason or "container removed"
        try:
            state = self.client().api.inspect_container(self.container_id)["State"]
        except docker.errors.NotFound:
            return "container is gone (removed outside benchflow)"
        except (docker.errors.DockerException, BackendStartError) as e:
            self.log.warning("cannot inspect container of backend %s: %s", self.name, e)
            return None
        if state.get("Status") in ("exited", "dead", "removing"):
            oom = " (out of memory)" if state.get("OOMKilled") else ""
            return f"container exited with code {state.get('ExitCode')}{oom}"
        return None

    def logs(self) -> str:
        if self._final_logs is not None:
            return self._final_logs
        if self.container_id is None:
            return self._last_logs
        try:
            self._last_logs = self.client().api.logs(self.container_id).decode(errors="replace")
        except (docker.errors.DockerException, BackendStartError) as e:
            self.log.debug("no logs from container of backend %s: %s", self.name, e)
        return self._last_logs

    # -- stop ----------------------------------------------------------------------------------
    def stop(self, grace_s: float = 10.0) -> None:
        if self.container_id is None or self._final_logs is not None:
            return
        cid = self.container_id
        try:
            if self.alive() is None:
                self.client().api.stop(cid, timeout=math.ceil(grace_s))
            self.exit_reason = self.alive()
            self.logs()  # the full log, shutdown included, before the container goes
        except Exception as e:  # noqa: BLE001 - teardown must not leave the container behind
            self.log.warning("stopping container %s of backend %s failed (%s); removing it", cid[:12], self.name,
                        _reason(e))
        finally:
            self._final_logs = self._last_logs
            try:
                remove_container(self.client(), cid, grace_s=0)
            except Exception as e:  # noqa: BLE001 - stop() never raises; cleanup finds it by its labels
                self.log.error("could not remove container %s of backend %s: %s", cid[:12], self.name, _reason(e))
            self._write_log_file()
        self.log.info("backend %s: container %s stopped (%s) and removed", self.name, self.container_name,
                 self.exit_reason)

    def _write_log_file(self) -> None:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"=== container {self.container_name} ({(self.container_id or '')[:12]}) image "
                        f"{self.plan.image} {self.image_digest}: {self.exit_reason} ===\n{self._final_logs or ''}")
        except OSError as e:
            self.log.warning("cannot write %s: %s", self.log_path, e)


def _plan(backend: Any, model: str, campaign_id: str, cell_id: str, run_id: str) -> ContainerPlan:
    try:
        if getattr(backend, "network_mode", "bridge") == "host":
            if not backend.port:
                backend = backend.model_copy(update={"port": free_port(backend.publish_host)})
            return render_container(backend, model=model, campaign_id=campaign_id, cell_id=cell_id, run_id=run_id)
        host_port = free_port(getattr(backend, "publish_host", "127.0.0.1"))
        return render_container(backend, model=model, campaign_id=campaign_id, cell_id=cell_id,
                                host_port=host_port, run_id=run_id)
    except SpecError as e:
        raise BackendStartError(f"backend {backend.name}: {e}") from e


def _remove_stale(client: Any, campaign_id: str, backend_name: str, logger: Any = log) -> None:
    """Removes containers of this campaign's backend that an earlier (crashed) run left behind."""
    labels = [f"{MANAGED_LABEL}=true", f"{CAMPAIGN_LABEL}={campaign_id}", f"{BACKEND_LABEL}={backend_name}"]
    for container in client.containers.list(all=True, filters={"label": labels}):
        logger.warning("backend %s: removing container %s left by an earlier run (%s)", backend_name,
                    container.name, container.status)
        remove_container(client, container.id, grace_s=10.0)
