"""Backend launchers: start a serving backend, wait until it is ready, collect its logs, stop it.

Three launchers share one contract (:mod:`benchflow.launch.base`): ``process`` (a local command),
``none`` (an endpoint that is already running) and ``docker`` (a container, through the Docker
SDK). :func:`make_launcher` picks one for a backend spec; :func:`cleanup_leftovers` stops what a
crashed run left behind (registered processes, labelled containers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from benchflow.launch.base import Launcher, tail
from benchflow.launch.process import EndpointLauncher, ProcessLauncher, reap_leftovers

log = logging.getLogger(__name__)


def make_launcher(backend: Any, model: str, *, log_path: Path, registry_dir: Path | None = None, owner: str = "",
                  run_id: str = "", env_extra: Mapping[str, str] | None = None, logger: Any = None) -> Launcher:
    """The launcher for ``backend`` (its ``launcher`` field: ``process``, ``none`` or ``docker``;
    with a ``router``, a :class:`~benchflow.launch.replicas.ReplicatedLauncher` of such launchers).

    ``log_path`` receives the backend's log; ``registry_dir`` holds the pid files of ``process``
    backends; ``owner`` (the campaign id) and ``run_id`` (the flow run id) mark what the launcher
    starts, so that :func:`cleanup_leftovers` finds it after a crash. ``env_extra`` adds
    variables (secrets such as ``HF_TOKEN``) to the backend's environment; the spec's ``env``
    wins over it. ``logger`` (a :class:`logging.Logger` or adapter, such as a Prefect run logger)
    receives the launcher's messages instead of the module loggers. Nothing is started yet.
    """
    if getattr(backend, "router", None) is not None:
        from benchflow.launch.replicas import make_replicated_launcher

        def make_one(one: Any, path: Path) -> Launcher:
            return make_launcher(one, model, log_path=path, registry_dir=registry_dir, owner=owner, run_id=run_id,
                                 env_extra=env_extra, logger=logger)

        return make_replicated_launcher(backend, model, log_path=log_path, make_one=make_one,
                                        registry_dir=registry_dir, owner=owner, run_id=run_id, env_extra=env_extra,
                                        logger=logger)
    kind = getattr(backend, "launcher", None)
    if kind == "none":
        if not backend.url:
            raise ValueError(f"backend {backend.name}: launcher none needs a url")
        return EndpointLauncher(backend.url, logger=logger)
    if kind == "process":
        return ProcessLauncher(backend, model, log_path, registry_dir=registry_dir, owner=owner, run_id=run_id,
                               env_extra=env_extra, logger=logger)
    if kind == "docker":
        from benchflow.launch.docker import DockerLauncher

        return DockerLauncher(backend, model, log_path, owner=owner, run_id=run_id, env_extra=env_extra,
                              logger=logger)
    raise ValueError(f"backend {backend.name}: unknown launcher {kind!r}")


def make_local_launcher(backend: Any, model: str, log_path: Path, *, registry_dir: Path | None = None,
                        owner: str = "", run_id: str = "") -> Launcher:
    """The launcher for a ``process`` or ``none`` backend (kept for callers of the old name)."""
    if backend.launcher not in ("process", "none"):
        raise ValueError(f"backend {backend.name}: launcher {backend.launcher!r} is not a local launcher")
    return make_launcher(backend, model, log_path=log_path, registry_dir=registry_dir, owner=owner, run_id=run_id)


def cleanup_leftovers(*, owner: str | None = None, run_id: str | None = None, registry_dir: Path | None = None,
                      containers: bool = True, grace_s: float = 10.0, client: Any = None) -> list[str]:
    """Stops the backends that a run which ended before its teardown left behind, and returns a
    one-line description of each: the processes registered in ``registry_dir`` and (with
    ``containers``) the containers labelled ``benchflow.managed=true``, limited to ``owner``'s
    (campaign id) and/or ``run_id``'s. One of them must be given. Without a reachable Docker engine
    there are no containers to clean up.
    """
    if owner is None and run_id is None:
        raise ValueError("cleanup_leftovers needs an owner (campaign id) or a run id; it never cleans up everything")
    found: list[str] = []
    if registry_dir is not None:
        for info in reap_leftovers(Path(registry_dir), owner=owner, run_id=run_id, grace_s=grace_s):
            found.append(f"process {info.get('pid')} of backend {info.get('backend')}")
    if containers:
        found += _cleanup_containers(owner, run_id, grace_s, client)
    return found


def _cleanup_containers(owner: str | None, run_id: str | None, grace_s: float, client: Any) -> list[str]:
    from benchflow.errors import BenchflowError
    from benchflow.launch.docker_cleanup import connect, remove_leftovers

    own = client is None
    try:
        client = connect() if own else client
    except BenchflowError as e:
        log.info("%s; no containers to clean up", e)
        return []
    try:
        removed = remove_leftovers(client, owner, grace_s, run_id=run_id)
    finally:
        if own:
            client.close()
    return [f"container {leftover.describe()}" for leftover in removed]


__all__ = ["Launcher", "EndpointLauncher", "ProcessLauncher", "cleanup_leftovers", "make_launcher",
           "make_local_launcher", "reap_leftovers", "tail"]
