"""State hooks: leave no backend behind when a flow run is cancelled or crashes."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Union
from uuid import UUID

from benchflow.cli.run import STOP_SIGNAL_ENV
from benchflow.store.results import Results

log = logging.getLogger(__name__)

#: A flow run's id as ``prefect.runtime.flow_run.id`` gives it (None outside a run).
FlowRunId = Union[UUID, str, None]

@contextmanager
def running_campaign(flow_run_id: FlowRunId, results: Results, campaign_id: str) -> Iterator[None]:
    """Never leaves the campaign ``running`` when the flow's process is stopped from outside:

    - a worker stopping it to cancel it (Prefect's runner sends SIGTERM with a cancel intent), and
    - ``benchflow run`` stopped by Ctrl-C (SIGINT) or a process manager's SIGTERM (``timeout``, systemd)

    both mark it ``cancelled``, with the cause in the log; the engine has torn the backend down and
    stored every measured cell by then, so the same command resumes it."""
    try:
        yield
    except BaseException as e:
        if not isinstance(e, Exception):
            why = "cancel requested" if _cancel_intent() else _signal_name(e)
            if why is not None:
                _set_cancelled(results, campaign_id, flow_run_id, why)
        raise


def _signal_name(e: BaseException) -> str | None:
    """The stop signal behind ``e``: SIGINT (KeyboardInterrupt), or Prefect's TerminationSignal."""
    if isinstance(e, KeyboardInterrupt) or os.environ.get(STOP_SIGNAL_ENV) == "SIGINT":
        return "interrupted (SIGINT)"  # benchflow run delivers Ctrl-C as SIGTERM (benchflow/cli/run.py)
    number = getattr(e, "signal", None)
    if isinstance(number, int):
        try:
            return f"stopped by {signal.Signals(number).name}"
        except ValueError:
            return f"stopped by signal {number}"
    return None


def _cancel_intent() -> bool:
    try:  # Prefect 3.8's runner-to-flow control channel; absent elsewhere
        from prefect._internal.control_listener import get_intent
    except ImportError:
        return False
    return get_intent() == "cancel"


def _set_cancelled(results: Results, campaign_id: str, flow_run_id: FlowRunId,
                   why: str = "cancel requested") -> None:
    try:
        results.finish_campaign(campaign_id, "cancelled")
        log.warning("campaign %s cancelled: %s (flow run %s); measured cells are stored, the same command "
                    "resumes it", campaign_id, why, flow_run_id)
    except Exception as e:  # noqa: BLE001 - never raise from clean-up
        log.warning("campaign %s: could not mark it cancelled: %s", campaign_id, e)


def mark_cancelled(flow, flow_run, state) -> None:
    """``on_cancellation``: a campaign of this flow run still ``running`` in the results database is
    marked ``cancelled`` (this hook may run in the worker, not in the flow's process)."""
    try:
        from benchflow.store.results import Results
        from tasks.secrets import load_settings

        load_settings()
        results = Results.from_env()
        running = [c for c in results.store.campaigns(status="running")
                   if c.get("flow_run_id") == str(flow_run.id)]
    except Exception as e:  # noqa: BLE001 - never raise from a hook
        log.warning("flow run %s: cannot look up its campaign: %s", flow_run.id, e)
        return
    for campaign in running:
        _set_cancelled(results, campaign["id"], flow_run.id)


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
