"""Prefect artifacts of a campaign. Keys use lowercase letters, digits and dashes only."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from benchflow import report
from benchflow.results_types import AggregateRow, ComparisonRow, iter_dicts

log = logging.getLogger(__name__)


def artifact_key(*parts: str) -> str:
    """A valid artifact key from free text: lowercase, digits and dashes, at most 100 chars."""
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return key[:100].strip("-") or "benchflow"


class Progress:
    """A progress artifact updated after every cell."""

    def __init__(self, campaign_id: str, total: int, done: int = 0):
        self.total = max(total, 1)
        self.done = done
        self.id: UUID = create_progress_artifact(
            progress=100.0 * done / self.total, key=artifact_key("campaign", campaign_id, "progress"),
            description=f"cells done for campaign {campaign_id}")

    def advance(self, note: str) -> None:
        self.done += 1
        update_progress_artifact(self.id, progress=100.0 * self.done / self.total,
                                 description=f"{self.done}/{self.total} cells — last: {note}")


def publish_results(campaign_id: str, campaign: dict[str, Any], cells: list[dict[str, Any]],
                    aggregates: Sequence[AggregateRow | Mapping[str, Any]],
                    comparisons: Sequence[ComparisonRow | Mapping[str, Any]],
                    results: Any = None) -> str:
    """The keyed aggregate and comparison tables and the markdown report (with the campaign's charts
    embedded as SVG when ``results`` is given; they are stored under ``charts/`` too). Returns the
    report's markdown without the charts (it is stored as ``report.md``; the charts are files)."""
    aggregates, comparisons = list(iter_dicts(aggregates)), list(iter_dicts(comparisons))  # the report reads dicts
    create_table_artifact(
        key=artifact_key("campaign", campaign_id, "aggregates"),
        table=[dict(zip(report.AGG_HEADERS, r)) for r in report.aggregate_table_rows(aggregates)],
        description=f"Aggregates across repetitions with 95% CIs, campaign {campaign_id}")
    create_table_artifact(
        key=artifact_key("campaign", campaign_id, "comparisons"),
        table=[dict(zip(report.CMP_HEADERS, r)) for r in report.comparison_table_rows(comparisons, aggregates)],
        description=f"Backend comparisons with verdicts, campaign {campaign_id}")
    backends = _backends(results, campaign_id)
    markdown = report.render_markdown(campaign, cells, aggregates, comparisons, backends=backends)
    create_markdown_artifact(markdown=markdown + _charts(results, campaign_id),
                             key=artifact_key("campaign", campaign_id, "report"),
                             description=f"Report of campaign {campaign_id}")
    return markdown


def _backends(results: Any, campaign_id: str) -> list[dict[str, Any]] | None:
    if results is None:
        return None
    try:
        return results.store.backends(campaign_id)
    except Exception as e:  # noqa: BLE001 - the report goes out without the setup section
        log.warning("report of %s without its backends' setup: %s", campaign_id, e)
        return None


def _charts(results: Any, campaign_id: str) -> str:
    """The campaign's charts as markdown (SVG data URIs); a chart that fails never fails the run."""
    if results is None:
        return ""
    try:
        from benchflow.charts import charts_markdown, render_campaign_charts

        return "\n\n" + charts_markdown(render_campaign_charts(results, campaign_id))
    except Exception as e:  # noqa: BLE001 - charts are a view; the numbers are stored already
        log.warning("charts of campaign %s could not be drawn: %s", campaign_id, e)
        return ""
