"""Run one cell: samplers alongside the load generator. Live measurement: never cached.

A cell that failed (its backend died or stalled, no request succeeded) ends its task run Failed,
so the task graph shows it red, with the cause in the state message and the run log: the cell's
error and the last lines the backend logged during the cell. A cell stopped by a cancel request
ends Cancelled. The outcome is the state's data either way, so the flow reads it with
``return_state=True`` and the campaign goes on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, Failed, State

from benchflow import runner
from benchflow.engine import with_log_tail
from benchflow.launch import Launcher
from benchflow.metrics.nvml import NvmlInterface
from benchflow.runner import CellOutcome, measure_cell_sync
from benchflow.spec import CampaignSpec, Cell

#: Whether the runner can stop a cell's load when asked (``should_stop``); until it can, a cancel
#: request is noticed between cells.
RUNNER_STOPS = any("should_stop" in inspect.signature(f).parameters
                   for f in (runner.measure_cell, runner.measure_cell_sync))


def _no_stop() -> str | None:
    return None


@task(name="run-cell", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="run-cell-{cell.backend}-{cell.load_point.label}-rep{cell.repetition}")
def run_cell(spec: CampaignSpec, cell: Cell, launcher: Launcher, nvml: NvmlInterface | None = None,
             gpu_indices: list[int] | None = None,
             should_stop: Callable[[], str | None] = _no_stop) -> CellOutcome | State:
    logger = get_run_logger()
    log_start = len(launcher.logs())
    extra = {"should_stop": should_stop} if RUNNER_STOPS else {}
    if getattr(launcher, "replica_urls", None):  # replicas behind a router: each one's /metrics, labelled
        extra["replica_urls"] = launcher.replica_urls
    outcome = measure_cell_sync(spec, cell, launcher.url, alive=launcher.alive, nvml=nvml, gpu_indices=gpu_indices,
                                **extra)
    with_log_tail(outcome, launcher.logs()[log_start:], launcher.alive())
    name = f"cell {cell.backend} {cell.load_point.label} rep {cell.repetition}"
    s = outcome.summary or {}
    if outcome.status == "completed":
        logger.info("%s: %s ok, %s errors, p50 TTFT %s ms, %.2f req/s%s", name, s.get("completed"),
                    sum((s.get("errors") or {}).values()), _r((s.get("ttft_ms") or {}).get("p50")),
                    s.get("request_throughput") or 0.0, f" — INVALID: {s['invalid']}" if s.get("invalid") else "")
        return outcome
    if outcome.status == "saturated":  # measured and stored, stopped early: not a failure
        logger.warning("%s %s", name, outcome.error)
        return outcome
    if outcome.status == "cancelled":
        logger.warning("%s cancelled: %s", name, outcome.error)
        return Cancelled(message=f"{name} cancelled: {_first(outcome.error)}", data=Carried(outcome))
    logger.error("%s %s: %s", name, outcome.status, outcome.error)
    return Failed(message=f"{name} {outcome.status}: {outcome.error}", data=Carried(outcome))


class Carried:
    """A failed cell's outcome as the data of its state, with a short repr (Prefect logs the state)."""

    def __init__(self, outcome: CellOutcome):
        self.outcome = outcome

    def __repr__(self) -> str:
        return f"<cell {self.outcome.cell_id} {self.outcome.status}>"


def outcome_of(state: State) -> CellOutcome:
    """The outcome a ``run_cell(..., return_state=True)`` state carries, whatever the state; an
    exception the task raised (a bug, not a failed cell) is raised again."""
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    return value.outcome if isinstance(value, Carried) else value


def _first(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else "cancel requested"


def _r(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"
