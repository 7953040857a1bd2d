"""Persist to the results store (SQLite/Postgres rows, local/S3 artifacts).

The library's ``Results`` facade retries with backoff and spools to local disk when a store
cannot be reached; these tasks surface that in the run log so nothing is silently lost.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from benchflow.results_types import AggregateRow, CellRow, CellSummary, ComparisonRow
from benchflow.spec import CampaignSpec, Cell
from benchflow.store.results import PersistOutcome, Results

_POLICY = dict(cache_policy=NO_CACHE, persist_result=False)


def open_results() -> Results:
    """Opens the configured stores, upgrades the schema when needed and replays the spool.

    Raises StorageError (StorageUnavailableError when the database cannot be reached).
    """
    from tasks.secrets import load_settings

    load_settings()  # BENCHFLOW_DATABASE_URL etc. from Prefect Secret blocks when the environment lacks them
    results = Results.from_env()
    results.store.upgrade()
    replay_spool(results)
    return results


def replay_spool(results: Results, campaign_id: str | None = None) -> str | None:
    """Replays the spool (writes of earlier runs, and of this one while storage was down).

    Returns None when nothing (of ``campaign_id``, when given) is left in the spool, else why
    something is: the storage error that stopped the replay, or the count of failed replays.
    """
    logger = get_run_logger()
    outcome = results.flush()
    if outcome.replayed:
        logger.warning("replayed %d spooled writes into %s", outcome.replayed, results.describe())
    left = results.spool.count(campaign_id) if campaign_id else outcome.remaining
    if not left:
        return None
    if outcome.skipped_locked:
        return f"another process is flushing the spool at {results.spool.root}"
    return outcome.error or f"{left} spooled writes could not be replayed (see the log)"


def _report(outcome: PersistOutcome, what: str) -> None:
    if getattr(outcome, "spooled", False):
        get_run_logger().warning("%s could not be stored now; spooled to %s (run `benchflow flush` later)",
                                 what, outcome.where)


@task(name="persist-campaign", **_POLICY)
def persist_campaign(results: Results, campaign_id: str, spec: CampaignSpec, status: str, flow_run_id: str) -> None:
    _report(results.persist_campaign(campaign_id, spec, status=status, flow_run_id=flow_run_id),
            f"campaign {campaign_id}")


@task(name="persist-cell", task_run_name="persist-cell-{cell.backend}-{cell.load_point.label}-rep{cell.repetition}",
      **_POLICY)
def persist_cell(results: Results, campaign_id: str, cell: Cell, row: CellRow,
                 summary: CellSummary | dict[str, Any] | None,
                 artifacts: dict[str, bytes]) -> None:
    _report(results.persist_cell(campaign_id, row, summary, artifacts), f"cell {cell.id}")


@task(name="persist-backend-log", task_run_name="persist-backend-log-{backend_name}", **_POLICY)
def persist_backend_log(results: Results, campaign_id: str, backend_name: str, logs: str) -> None:
    _report(results.persist_artifact(campaign_id, f"backend-{backend_name}.log", logs.encode()),
            f"log of backend {backend_name}")


@task(name="persist-health", **_POLICY)
def persist_health(results: Results, report: dict[str, Any], campaign_id: str | None) -> None:
    _report(results.persist_health_report(report, campaign_id=campaign_id), "GPU health report")


@task(name="persist-analysis", **_POLICY)
def persist_analysis(results: Results, campaign_id: str, aggregates: list[AggregateRow],
                     comparisons: list[ComparisonRow]) -> None:
    _report(results.persist_aggregates(campaign_id, aggregates), "aggregates")
    _report(results.persist_comparisons(campaign_id, comparisons), "comparisons")


@task(name="persist-report", **_POLICY)
def persist_report(results: Results, campaign_id: str, markdown: str, code_path: str | None = None) -> None:
    from benchflow.store.manifest import build_manifest

    _report(results.persist_report(campaign_id, markdown), "report")
    health = results.store.health_reports(campaign_id=campaign_id, limit=1)  # driver and CUDA, when GPUs were used
    manifest = build_manifest(code_path=code_path, artifacts=results.artifact_checksums(campaign_id),
                              health_report=(health[0].get("report") or health[0]) if health else None)
    _report(results.persist_manifest(campaign_id, manifest), "run manifest")
