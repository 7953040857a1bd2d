"""The ``docker`` launcher: one serving backend in one container, through prefect-docker.

Lifecycle steps (pull, create, start, stop, final log capture, removal) are prefect-docker's
container tasks, so each one is a task run in the campaign's timeline. Inside a flow run they are
submitted to the flow's task runner and resolved at once (``.submit(...).result()``; this works
from inside another task such as ``deploy_backend``); outside any flow run they run as standalone
task runs. They return docker objects that cannot be pickled, so they run with
``cache_policy=NO_CACHE`` and ``persist_result=False``. The frequent cheap reads (``alive()``
while a cell runs, log snapshots) use a docker-py client from the same :class:`DockerHost`
instead of creating a task run per poll.

* The image is used from the local engine or pulled by the backend's ``pull_policy``
  (``if-missing`` | ``always`` | ``never``); its digest is kept in ``image_digest`` (the
  registry digest ``sha256:...`` when the image came from a registry, else the local image id).
* The container is created from :func:`benchflow.launch.docker_render.render_container`: the
  command is a list, the port is published on a free port of ``127.0.0.1`` (unless host
  networking), GPUs are device requests, and the labels name the campaign, the backend and the
  flow run. ``HF_TOKEN`` comes from the Prefect Secret block ``hf-token`` when it exists, else
  from the ``HF_TOKEN`` environment variable; only redacted arguments are ever logged.
* Readiness is :func:`benchflow.launch.readiness.wait_ready`; a container that exits while
  starting fails at once with its exit code and log tail, and is removed.
* ``stop()`` stops with the grace period, keeps the FULL log (``logs()`` still returns it), appends
  it to ``<log_dir>/backend-<name>.log``, then removes the container. It is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path
from typing import Any

import docker
from docker.utils import parse_repository_tag
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect_docker.containers import (
    create_docker_container, get_docker_container_logs, remove_docker_container, start_docker_container,
    stop_docker_container,
)
from prefect_docker.host import DockerHost
from prefect_docker.images import pull_docker_image

from benchflow.errors import BackendStartError, SpecError, StorageError
from benchflow.launch.base import tail
from benchflow.launch.docker_cleanup import remove_container, remove_leftovers
from benchflow.launch.docker_render import (
    BACKEND_LABEL, CAMPAIGN_LABEL, MANAGED_LABEL, ContainerPlan, redact_create_kwargs, render_container,
)
from benchflow.launch.process import free_port
from benchflow.launch.readiness import wait_ready
from benchflow.spec_backends import BackendSpec
from benchflow.store.results import Results
from benchflow.store.rows import backend_row

log = logging.getLogger(__name__)

#: The Prefect Secret block that holds the Hugging Face token, and its environment fallback.
HF_TOKEN_BLOCK = "hf-token"
HF_TOKEN_ENV = "HF_TOKEN"
_LIVE: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
pull_image = pull_docker_image.with_options(name="docker-pull-image", **_LIVE)
create_container = create_docker_container.with_options(name="docker-create-container", **_LIVE)
start_container = start_docker_container.with_options(name="docker-start-container", **_LIVE)
stop_container = stop_docker_container.with_options(name="docker-stop-container", **_LIVE)
container_logs = get_docker_container_logs.with_options(name="docker-container-logs", **_LIVE)
delete_container = remove_docker_container.with_options(name="docker-remove-container", **_LIVE)


def _logger() -> Any:
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def _call(docker_task: Any, **kwargs: Any) -> Any:
    """Runs one (async) prefect-docker task to completion and returns its result."""
    if FlowRunContext.get() is not None:
        return docker_task.submit(**kwargs).result()
    return asyncio.run(docker_task(**kwargs))


def _reason(err: Exception) -> str:
    text = getattr(err, "explanation", None) or str(err) or type(err).__name__
    return str(text).splitlines()[0]


def hf_token() -> str | None:
    """The Hugging Face token: the Prefect Secret block ``hf-token``, else ``$HF_TOKEN``, else None."""
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(HF_TOKEN_BLOCK, _sync=True).get()
        if value:
            return str(value)
    except Exception as e:  # noqa: BLE001 - a missing block or no API both mean "use the environment"
        log.debug("no Prefect Secret block %r (%s); using $%s", HF_TOKEN_BLOCK, type(e).__name__, HF_TOKEN_ENV)
    return os.environ.get(HF_TOKEN_ENV) or None


def ensure_image(client: Any, ref: str, pull_policy: str, docker_host: DockerHost | None = None) -> Any:
    """The docker ``Image`` for ``ref``, pulled (through prefect-docker) as ``pull_policy`` says."""
    if pull_policy != "always":
        try:
            return client.images.get(ref)
        except docker.errors.ImageNotFound:
            if pull_policy == "never":
                raise BackendStartError(
                    f"image {ref} is not on the Docker host and pull_policy is never; build or load it "
                    "first (see `docker images`), or set pull_policy: if-missing") from None
    repository, tag = parse_repository_tag(ref)
    try:
        _call(pull_image, repository=repository, tag=tag or "latest", docker_host=docker_host)
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
    """A backend in a container; see :mod:`benchflow.launch.base` for the launcher contract."""

    #: How often a log snapshot is logged while the engine is still starting.
    snapshot_every_s = 30.0

    def __init__(self, backend: Any, model: str, campaign_id: str, log_dir: Path | str, *, cell_id: str = "",
                 run_id: str = "", docker_host: DockerHost | None = None):
        self.backend = backend
        self.name = str(backend.name)
        self.campaign_id = campaign_id
        self.docker_host = docker_host or DockerHost()
        self.log_path = Path(log_dir) / f"backend-{self.name}.log"
        self.plan: ContainerPlan = _plan(backend, model, campaign_id, cell_id, run_id)
        self.url: str | None = None
        self.container_id: str | None = None
        self.image_id: str | None = None
        self.image_digest: str | None = None
        self.exit_reason: str | None = None
        self._client: Any = None
        self._last_logs = ""
        self._final_logs: str | None = None

    @property
    def container_name(self) -> str:
        return str(self.plan.create_kwargs["name"])

    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = self.docker_host.get_client()
                self._client.ping()
            except docker.errors.DockerException as e:
                self._client = None
                raise BackendStartError(f"no Docker engine reachable ({_reason(e)}); start dockerd or set "
                                        "DOCKER_HOST", transient=True) from e
        return self._client

    # -- start --------------------------------------------------------------------------------
    def create(self) -> str:
        """Resolves the image, removes this backend's leftovers and creates the container (not started)."""
        client = self.client()
        image = ensure_image(client, self.plan.image, self.plan.pull_policy, self.docker_host)
        self.image_id, self.image_digest = image.id, image_digest(image, self.plan.image)
        _remove_stale(client, self.campaign_id, self.name)
        kwargs = self.create_kwargs()
        _logger().info("backend %s: creating container %s from %s (%s): %s", self.name, self.container_name,
                       self.plan.image, self.image_digest, redact_create_kwargs(kwargs))
        try:
            container = _call(create_container, docker_host=self.docker_host, **kwargs)
        except docker.errors.DockerException as e:
            raise BackendStartError(f"cannot create container for backend {self.name}: {_reason(e)}") from e
        self.container_id = container.id
        return container.id

    def create_kwargs(self) -> dict[str, Any]:
        """The rendered create arguments plus the secrets (never log these; log ``plan.redacted()``)."""
        kwargs = dict(self.plan.create_kwargs)
        env = dict(kwargs.get("environment") or {})
        if HF_TOKEN_ENV in env:
            _logger().warning("backend %s: %s is set in the spec's env, where it is stored in plain text; use "
                              "the Prefect Secret block %r or the %s environment variable", self.name,
                              HF_TOKEN_ENV, HF_TOKEN_BLOCK, HF_TOKEN_ENV)
        else:
            token = hf_token()
            if token:
                env[HF_TOKEN_ENV] = token
        kwargs["environment"] = env
        return kwargs

    def start(self) -> str:
        if self.container_id is None:
            self.create()
        try:
            _call(start_container, container_id=self.container_id, docker_host=self.docker_host)
        except docker.errors.DockerException as e:
            reason = _reason(e)
            self.stop(0)
            busy = "port is already allocated" in reason or "address already in use" in reason
            raise BackendStartError(f"cannot start container for backend {self.name}: {reason}",
                                    log_tail=tail(self.logs()), transient=busy) from e
        self.url = self.plan.base_url
        return self.url

    def ready(self, timeout_s: float) -> None:
        assert self.url, "start() first"
        took = wait_ready(self.url, timeout_s, alive=self.alive, logs=self.logs, on_wait=self._snapshot,
                          snapshot_every_s=self.snapshot_every_s)
        _logger().info("backend %s ready at %s after %.1fs (container %s)", self.name, self.url, took,
                       self.container_name)

    def _snapshot(self, elapsed_s: float, why: str) -> None:
        _logger().info("backend %s still starting after %.0fs (%s); container log tail:\n%s", self.name,
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
            log.warning("cannot inspect container of backend %s: %s", self.name, e)
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
            log.debug("no logs from container of backend %s: %s", self.name, e)
        return self._last_logs

    # -- stop ----------------------------------------------------------------------------------
    def stop(self, grace_s: float = 10.0) -> None:
        if self.container_id is None or self._final_logs is not None:
            return
        cid = self.container_id
        try:
            self._stop_and_remove(cid, grace_s)
        except Exception as e:  # noqa: BLE001 - teardown must not leave the container behind
            log.warning("stopping container %s through prefect-docker failed (%s); removing it directly",
                        cid[:12], _reason(e))
            remove_container(self.client(), cid, grace_s)
        finally:
            if self._final_logs is None:
                self._final_logs = self._last_logs
            self._write_log_file()
        _logger().info("backend %s: container %s stopped (%s) and removed", self.name, self.container_name,
                       self.exit_reason)

    def _stop_and_remove(self, cid: str, grace_s: float) -> None:
        if self.alive() is None:
            _call(stop_container, container_id=cid, docker_host=self.docker_host, timeout=math.ceil(grace_s))
        self.exit_reason = self.alive()
        try:
            self._final_logs = _call(container_logs, container_id=cid, docker_host=self.docker_host)
        except Exception as e:  # noqa: BLE001 - e.g. bytes that are not UTF-8: read them leniently
            log.debug("log capture through prefect-docker failed (%s); reading directly", _reason(e))
            self._final_logs = self.logs()
        if "gone" not in (self.exit_reason or ""):
            _call(delete_container, container_id=cid, docker_host=self.docker_host, v=True, force=True)

    def _write_log_file(self) -> None:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"=== container {self.container_name} ({(self.container_id or '')[:12]}) image "
                        f"{self.plan.image} {self.image_digest}: {self.exit_reason} ===\n{self._final_logs or ''}")
        except OSError as e:
            log.warning("cannot write %s: %s", self.log_path, e)


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


def _remove_stale(client: Any, campaign_id: str, backend_name: str) -> None:
    """Removes containers of this campaign's backend that an earlier (crashed) run left behind."""
    labels = [f"{MANAGED_LABEL}=true", f"{CAMPAIGN_LABEL}={campaign_id}", f"{BACKEND_LABEL}={backend_name}"]
    for container in client.containers.list(all=True, filters={"label": labels}):
        _logger().warning("backend %s: removing container %s left by an earlier run (%s)", backend_name,
                          container.name, container.status)
        remove_container(client, container.id, grace_s=10.0)


def deploy_container(backend: Any, model: str, campaign_id: str, log_dir: Path | str, *, cell_id: str = "",
                     docker_host: DockerHost | None = None) -> DockerLauncher:
    """Starts ``backend`` in a container and waits until it is ready; returns its launcher.

    Raises :class:`BackendStartError` (with the exit code and log tail) when it cannot start; no
    container is left behind then, nor when the run is cancelled while it starts.
    """
    logger = _logger()
    grace_s = float(getattr(backend, "stop_grace_s", 10.0))
    launcher = DockerLauncher(backend, model, campaign_id, log_dir, cell_id=cell_id,
                              run_id=str(flow_run.id or ""), docker_host=docker_host)
    try:
        url = launcher.start()
        logger.info("backend %s: container %s starting at %s", backend.name, launcher.container_name, url)
        launcher.ready(float(backend.ready_timeout_s))
    except BackendStartError as e:
        logger.error("backend %s failed to start: %s\n--- container log tail ---\n%s", backend.name,
                     str(e).split("\n", 1)[0], e.log_tail or tail(launcher.logs()))
        launcher.stop(grace_s)
        raise
    except BaseException:
        launcher.stop(grace_s)  # cancelled or crashed while starting: leave no container behind
        raise
    return launcher


def cleanup_campaign_containers(campaign_id: str, *, grace_s: float = 10.0,
                                docker_host: DockerHost | None = None) -> list[str]:
    """Removes every container labelled with ``campaign_id`` (left by a crashed earlier run);
    returns their names. Without a reachable Docker engine there is nothing to clean: []."""
    try:
        client = (docker_host or DockerHost()).get_client()
        client.ping()
    except docker.errors.DockerException as e:
        log.info("no Docker engine reachable (%s); no containers to clean up", _reason(e))
        return []
    with client:
        removed = remove_leftovers(client, campaign_id, grace_s)
    for leftover in removed:
        _logger().warning("removed container %s left by an earlier run", leftover.describe())
    return [leftover.name for leftover in removed]


@task(name="record-image-digest", **_LIVE)
def record_image_digest(results: Results, campaign_id: str, backend: BackendSpec, launcher: Any) -> str | None:
    """Stores the launcher's resolved image and digest on the campaign's backend row."""
    digest = getattr(launcher, "image_digest", None)
    if not digest:
        return None
    row = backend_row(backend).model_copy(update={"image": launcher.plan.image, "image_digest": digest})
    try:
        results.store.upsert_backend(campaign_id, row)
    except StorageError as e:
        get_run_logger().warning("could not store the image digest of backend %s (%s): %s", backend.name,
                                 digest, e)
    return digest
