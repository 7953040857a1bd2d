"""The campaign loop (each backend in the spec's order, only the cells not done yet) and the finish
(replay the spool, aggregate, compare, report, final status). Prefect-free.

:func:`run_campaign` never raises for a campaign that went wrong: it returns a
:class:`CampaignResult` whose ``status`` is ``completed``, ``failed``, ``cancelled`` or ``spooled``
and whose ``message`` says why, after setting the campaign's status in the results database. A
campaign is never left ``running``: a cancel request, results that cannot be stored, and any
unexpected exception each end it with one clear message. Only ``BaseException`` (a termination
signal, ``KeyboardInterrupt``) passes through, after the running backend is torn down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchflow import analysis
from benchflow.campaign import analysis_input, failure_summary
from benchflow.engine import dynamic
from benchflow.engine.backend import BackendResult, run_backend
from benchflow.engine.steps import BackendSteps, FinishSteps
from benchflow.errors import BenchflowError, CampaignCancelled, ResultsNotStoredError, StorageError
from benchflow.results_types import CellRow, CellSummary
from benchflow.spec import CampaignSpec, Cell


class RunFailed(BenchflowError):
    """A run (campaign, nightly, fleet check) that ended failed, as a value: the data of the flow
    run's Failed state. ``summary`` is what the run would have returned (campaign id, status)."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None):
        super().__init__(message)
        self.summary = dict(summary or {})


@dataclass
class CampaignResult:
    """How a campaign ended."""

    campaign_id: str
    status: str  #: completed | failed | cancelled | spooled
    message: str | None = None
    aggregates: int = 0
    comparisons: int = 0
    backends: list[BackendResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def summary(self) -> dict[str, Any]:
        """The flow's return value (and the data of its final state)."""
        out: dict[str, Any] = {"campaign_id": self.campaign_id, "status": self.status}
        if self.ok:
            out.update(aggregates=self.aggregates, comparisons=self.comparisons)
        return out


def completed_among(cells: list[Cell], completed_ids: set[str]) -> set[str]:
    """The ids of ``cells`` that are stored as completed (a resume skips them)."""
    return completed_ids & {c.id for c in cells}


def cells_to_run(cells: list[Cell], backend: str, done: set[str] | frozenset[str]) -> list[Cell]:
    """``backend``'s cells that are not stored as completed (what a resume still measures)."""
    return [c for c in cells if c.backend == backend and c.id not in done]


def run_campaign(spec: CampaignSpec, campaign_id: str, cells: list[Cell], steps: BackendSteps, finish: FinishSteps, *,
                 done: set[str] | frozenset[str] = frozenset(), workdir: Path | None = None) -> CampaignResult:
    """Runs every backend's cells that are not in ``done``, then finishes the campaign."""
    logger = steps.logger
    backends: list[BackendResult] = []
    try:
        for backend in spec.backends:
            todo = cells_to_run(cells, backend.name, done)
            if not todo:
                logger.info("backend %s: every cell already completed; skipped", backend.name)
                continue
            backends.append(run_backend(steps, spec, backend, todo, workdir=workdir))
        capacities = [row for b in backends for row in b.capacities]
        result = finish_campaign(spec, campaign_id, finish, capacities=capacities)
    except CampaignCancelled as e:
        result = end_campaign(finish, campaign_id, "cancelled",
                              f"campaign {campaign_id} cancelled: {e}. Backends are torn down and measured cells "
                              f"stored; run it again with --campaign-id {campaign_id} to measure the rest")
    except ResultsNotStoredError as e:
        result = end_campaign(finish, campaign_id, "failed", f"campaign {campaign_id} stopped: {e}")
    except Exception as e:  # noqa: BLE001 - never leave a campaign running
        logger.error("campaign %s: unexpected error", campaign_id, exc_info=True)
        result = end_campaign(finish, campaign_id, "failed",
                              f"campaign {campaign_id} failed: {type(e).__name__}: {e}")
    result.backends = backends
    return result


def end_campaign(finish: FinishSteps, campaign_id: str, status: str, message: str) -> CampaignResult:
    """Sets the final status (a failure to do so is logged, not raised) and logs ``message`` last."""
    try:
        finish.set_status(status)
    except Exception as e:  # noqa: BLE001 - the message below still says what happened
        finish.logger.warning("campaign %s: could not store its status %s: %s", campaign_id, status, e)
    if status == "cancelled":
        finish.logger.warning("%s", message)
    else:
        finish.logger.error("%s", message)
    return CampaignResult(campaign_id, status, message)


def finish_campaign(spec: CampaignSpec, campaign_id: str, steps: FinishSteps, *,
                    capacities: list[dict[str, Any]] | None = None) -> CampaignResult:
    """Replays the spool, aggregates, compares, publishes and stores the report, and sets the final
    status: ``failed`` when any cell failed, else ``completed``. ``capacities``: SLO-capacity
    aggregate rows found by this run, stored and reported with the aggregates (a search's probes are
    not aggregated; a sweep's points are aggregated but not compared across backends)."""
    logger = steps.logger
    problem = steps.replay_spool()  # cells spooled during an outage count too
    cells: list[CellRow] = []
    summaries: dict[str, CellSummary] = {}
    if problem is None:
        try:
            cells, summaries = steps.stored()
        except StorageError as e:
            problem = str(e)
    if problem is not None:
        return _results_spooled(steps, campaign_id, problem)
    rows = analysis_input(dynamic.for_aggregates(cells), summaries)
    metrics = analysis.metrics_of(spec)
    aggregates = steps.aggregate(rows, dynamic.aggregate_metrics(spec, metrics), spec.workload.seed)
    aggregates = list(aggregates) + list(capacities or [])
    comparisons = steps.compare(analysis_input(dynamic.for_comparisons(cells), summaries), metrics,
                                analysis.baseline_of(spec), analysis.tolerance_of(spec), spec.workload.seed)
    steps.persist_analysis(aggregates, comparisons)
    failure = failure_summary(cells)
    status = "failed" if failure else "completed"
    markdown = steps.publish({"id": campaign_id, "name": spec.name, "status": status}, cells, aggregates,
                             comparisons)
    steps.persist_report(markdown)
    steps.set_status(status)
    where = steps.describe()
    if failure:
        message = f"campaign {campaign_id}: {failure}"
        logger.error("campaign %s finished with failures (measured cells are stored in %s): %s", campaign_id,
                     where, failure)
        return CampaignResult(campaign_id, status, message, len(aggregates), len(comparisons))
    logger.info("campaign %s completed; results in %s", campaign_id, where)
    return CampaignResult(campaign_id, status, None, len(aggregates), len(comparisons))


def _results_spooled(steps: FinishSteps, campaign_id: str, problem: str) -> CampaignResult:
    """The end of a run whose results cannot be read back: the measurements wait in the spool."""
    steps.set_status("failed")  # stored, or spooled; a rerun sets it again
    message = (
        f"campaign {campaign_id}: measured, but its results could not be aggregated: {problem}. Nothing is lost: "
        f"{steps.spool_note()}. Once storage is reachable, run `benchflow flush`, then `benchflow report "
        f"{campaign_id}`; running the campaign again with --campaign-id {campaign_id} computes the aggregates "
        f"and comparisons (completed cells are not measured again)")
    steps.logger.error("%s", message)
    return CampaignResult(campaign_id, "spooled", message)
