"""Shared helpers of the Docker tests."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.docker.conftest import REPO


def benchflow_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Runs ``benchflow ARGS`` as a user would (a separate process) and returns its result."""
    return subprocess.run(
        [sys.executable, "-m", "benchflow", *args], capture_output=True, text=True, timeout=timeout_s,
        cwd=REPO, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )


def container_exists(client, container_id: str) -> bool:
    import docker

    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True
