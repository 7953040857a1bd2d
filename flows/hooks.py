"""State hooks: leave no backend behind when a flow run is cancelled or crashes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

#: flow run id -> (results, campaign id) of a campaign that a signal interrupted (a worker's cancel).
_INTERRUPTED: dict[str, tuple[Any, str]] = {}


@contextmanager
def running_campaign(flow_run_id: Any, results: Any, campaign_id: str) -> Iterator[None]:
    """Remembers the campaign of a flow run that a signal ends (a worker delivers a cancel by
    stopping the flow's process), so that :func:`mark_cancelled` can mark it."""
    try:
        yield
    except BaseException as e:
        if not isinstance(e, Exception):
            _INTERRUPTED[str(flow_run_id)] = (results, campaign_id)
        raise


def mark_cancelled(flow, flow_run, state) -> None:
    """On cancellation: a campaign the engine did not end itself (its process was told to stop) is
    marked ``cancelled`` in the results database; one that ended itself already is."""
    entry = _INTERRUPTED.pop(str(flow_run.id), None)
    if entry is None:
        return
    results, campaign_id = entry
    try:
        results.finish_campaign(campaign_id, "cancelled")
        log.warning("campaign %s cancelled (flow run %s); measured cells are stored", campaign_id, flow_run.id)
    except Exception as e:  # noqa: BLE001 - a hook must not raise
        log.warning("campaign %s: could not mark it cancelled: %s", campaign_id, e)


def reap_on_exit(flow, flow_run, state) -> None:
    """Stops every backend process and container that this flow run started."""
    from benchflow.launch import reap_leftovers
    from benchflow.store.config import StoreConfig

    home = StoreConfig.from_env().home
    for registry in (home / "runs").glob("*/processes"):
        for info in reap_leftovers(registry, run_id=str(flow_run.id)):
            log.warning("stopped backend %s left by %s run %s", info.get("backend"), state.name, flow_run.id)
    try:
        from benchflow.launch.docker_cleanup import remove_leftovers_for_run

        remove_leftovers_for_run(str(flow_run.id))
    except Exception as e:  # noqa: BLE001 - no engine here is fine
        log.debug("no container clean-up: %s", e)


def clean_campaign_leftovers(spec, campaign_id: str, workdir) -> None:
    """A campaign started after a crash first stops its own leftover backends: processes from
    the pid registry and, when it uses docker, containers labelled with its id."""
    from prefect import get_run_logger

    from benchflow.launch import reap_leftovers

    logger = get_run_logger()
    for info in reap_leftovers(workdir / "processes", owner=campaign_id):
        logger.warning("stopped leftover backend %s (pid %s) of an earlier run of %s",
                       info.get("backend"), info.get("pid"), campaign_id)
    if any(b.launcher == "docker" for b in spec.backends):
        from tasks.docker import cleanup_campaign_containers

        for name in cleanup_campaign_containers(campaign_id):
            logger.warning("removed leftover container %s of an earlier run of %s", name, campaign_id)
