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
