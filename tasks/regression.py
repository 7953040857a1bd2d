"""Nightly regression check: compare, store, publish, notify. The statistics live in benchflow.regression."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from benchflow import regression
from benchflow.results_types import CellResult
from benchflow.store.results import Results
from tasks.artifacts import artifact_key
from tasks.cache import STATISTICS_CACHE

#: The event an automation can match to notify someone of a regression.
REGRESSION_EVENT = "benchflow.regression.detected"


@task(name="check-regressions", cache_policy=STATISTICS_CACHE)
def check_regressions(baseline_rows: list[CellResult], candidate_rows: list[CellResult], metrics: list[str],
                      tolerance: float, tolerances: dict[str, float], seed: int, campaign_id: str,
                      baseline_campaign_id: str) -> regression.RegressionReport:
    return regression.detect(baseline_rows, candidate_rows, metrics=metrics, tolerance=tolerance,
                             tolerances=tolerances, seed=seed, campaign_id=campaign_id,
                             baseline_campaign_id=baseline_campaign_id)


@task(name="persist-regressions", cache_policy=NO_CACHE, persist_result=False)
def persist_regressions(results: Results, campaign_id: str, report: regression.RegressionReport) -> None:
    outcome = results.persist_comparisons(campaign_id, report.rows())
    if outcome.spooled:
        get_run_logger().warning("regression rows could not be stored now; spooled to %s", outcome.where)


def publish_regressions(spec_name: str, report: regression.RegressionReport | None, note: str = "") -> str:
    """The keyed markdown artifact (one key per spec name, so the UI keeps its history)."""
    from prefect.artifacts import create_markdown_artifact

    title = f"Nightly regression check: {spec_name}"
    markdown = report.to_markdown(title) if report is not None else f"# {title}\n\n{note}\n"
    create_markdown_artifact(markdown=markdown, key=artifact_key("nightly", spec_name, "regressions"),
                             description=report.message() if report is not None else note)
    return markdown


def emit_regression_event(spec_name: str, report: regression.RegressionReport) -> Any:
    """``benchflow.regression.detected`` on resource ``benchflow.campaign.<id>``, for automations."""
    from prefect.events import emit_event

    related = []
    if flow_run.id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.role": "flow-run"})
    return emit_event(
        event=REGRESSION_EVENT,
        resource={"prefect.resource.id": f"benchflow.campaign.{report.campaign_id}",
                  "prefect.resource.name": spec_name,
                  "benchflow.baseline-campaign-id": str(report.baseline_campaign_id)},
        related=related,
        payload={"message": report.message(), "regressions": [f.to_dict() for f in report.regressions]},
    )
