"""Final states of benchflow's flow runs.

A failed run ends ``Failed`` with its summary as the message and a :class:`RunFailed` as data: an
exception Prefect can raise when the run is executed for its result (a worker, or a plain call),
rather than a dict, which Prefect cannot turn into one (``TypeError: Unexpected result for failed
state``). The run's summary dict travels on the exception (``.summary``). A cancelled campaign
ends ``Cancelled`` the same way.

Prefect's flow-run entrypoint (a worker's flow process) logs every exception a failed run raises,
with its traceback, after the run's own last line. For these expected failures, already logged
as one line by the flow, :class:`ExpectedFailureFilter` drops that repeat, so the failure summary
stays the run's last log line.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.states import Cancelled, Failed, State

from benchflow.engine import CampaignResult, RunFailed
from benchflow.errors import CampaignCancelled

_ENGINE_EXIT = "Engine execution exited with unexpected exception"


def failed(message: str, summary: dict[str, Any] | None = None) -> State:
    return Failed(message=message, data=RunFailed(message, summary))


def cancelled(message: str, summary: dict[str, Any] | None = None) -> State:
    error = CampaignCancelled(message)
    error.summary = dict(summary or {})
    return Cancelled(message=message, data=error)


def campaign_state(result: CampaignResult) -> dict[str, Any] | State:
    """The flow's return value for an engine result: the summary dict, or a final state."""
    if result.ok:
        return result.summary()
    if result.status == "cancelled":
        return cancelled(result.message or "cancelled", result.summary())
    return failed(result.message or f"campaign {result.campaign_id} failed", result.summary())


def summary_of(state: State) -> dict[str, Any]:
    """The summary dict of a final state of these flows (Completed, Failed or Cancelled)."""
    value = state.result(raise_on_failure=False)
    if isinstance(value, dict):
        return value
    return dict(getattr(value, "summary", None) or {})


class ExpectedFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == _ENGINE_EXIT and isinstance(exc, (RunFailed, CampaignCancelled)))


def install_log_filter() -> None:
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, ExpectedFailureFilter) for f in logger.filters):
        logger.addFilter(ExpectedFailureFilter())


install_log_filter()
