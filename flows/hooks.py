"""State hooks: leave no backend behind when a flow run is cancelled or crashes."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


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
