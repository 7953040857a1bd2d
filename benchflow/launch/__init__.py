"""Backend launchers: start a serving backend, wait until it is ready, collect its logs, stop it.

``process`` and ``none`` live here; the ``docker`` launcher uses prefect-docker and lives in
``tasks/docker.py`` (its pure create-argument rendering is :mod:`benchflow.launch.docker_render`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchflow.launch.base import Launcher, tail
from benchflow.launch.process import EndpointLauncher, ProcessLauncher, reap_leftovers


def make_local_launcher(backend: Any, model: str, log_path: Path, *, registry_dir: Path | None = None,
                        owner: str = "", run_id: str = "") -> Launcher:
    """The launcher for a ``process`` or ``none`` backend."""
    if backend.launcher == "none":
        if not backend.url:
            raise ValueError(f"backend {backend.name}: launcher none needs a url")
        return EndpointLauncher(backend.url)
    if backend.launcher == "process":
        return ProcessLauncher(backend, model, log_path, registry_dir=registry_dir, owner=owner, run_id=run_id)
    raise ValueError(f"backend {backend.name}: launcher {backend.launcher!r} is not a local launcher")


__all__ = ["Launcher", "EndpointLauncher", "ProcessLauncher", "make_local_launcher", "reap_leftovers", "tail"]
