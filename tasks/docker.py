"""The Prefect side of the ``docker`` launcher: the ``HF_TOKEN`` Secret block, the clean-up of a
campaign's leftover containers, and the task that records the image digest.

The launcher itself is the library's :class:`benchflow.launch.docker.DockerLauncher` (docker-py,
no Prefect); ``tasks/backend.py`` deploys and tears it down like every other launcher.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from benchflow.errors import BenchflowError, StorageError
from benchflow.launch.docker_cleanup import connect, remove_leftovers
from benchflow.launch.docker import HF_TOKEN_ENV, DockerLauncher
from benchflow.spec import BackendSpec
from benchflow.store.results import Results
from benchflow.store.rows import backend_row

log = logging.getLogger(__name__)

#: The Prefect Secret block that holds the Hugging Face token (its fallback: ``$HF_TOKEN``).
HF_TOKEN_BLOCK = "hf-token"
_LIVE: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


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


def secret_env(backend: BackendSpec) -> dict[str, str]:
    """The secrets a container backend gets (``env_extra`` of the launcher): ``HF_TOKEN`` when
    known and the spec's own ``env`` does not set it. Never logged."""
    if getattr(backend, "launcher", None) != "docker" or HF_TOKEN_ENV in (getattr(backend, "env", None) or {}):
        return {}
    token = hf_token()
    return {HF_TOKEN_ENV: token} if token else {}


def cleanup_campaign_containers(campaign_id: str, *, grace_s: float = 10.0) -> list[str]:
    """Removes every container labelled with ``campaign_id`` (left by a crashed earlier run);
    returns their names. Without a reachable Docker engine there is nothing to clean: []."""
    try:
        client = connect()
    except BenchflowError as e:
        log.info("%s; no containers to clean up", e)
        return []
    try:
        removed = remove_leftovers(client, campaign_id, grace_s)
    finally:
        client.close()
    for leftover in removed:
        _logger().warning("removed container %s left by an earlier run", leftover.describe())
    return [leftover.name for leftover in removed]


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run: the module logger
        return log


@task(name="record-image-digest", **_LIVE)
def record_image_digest(results: Results, campaign_id: str, backend: BackendSpec,
                        launcher: DockerLauncher) -> str | None:
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
