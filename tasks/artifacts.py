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

from benchflow import progress as terminal
from benchflow import report
from benchflow.results_types import AggregateRow, CellRow, ComparisonRow, iter_dicts
from benchflow.store.results import Results

log = logging.getLogger(__name__)


def artifact_key(*parts: str) -> str:
    """A valid artifact key from free text: lowercase, digits and dashes, at most 100 chars."""
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return key[:100].strip("-") or "benchflow"


def campaign_key(name: str, kind: str) -> str:
    """``campaign-<name-slug>-<kind>``: one key per campaign NAME, so that Prefect's history of the
    key is the series of its runs (the nightly ones, say); the description names each run's id."""
    return artifact_key("campaign", name)[:99 - len(kind)].strip("-") + "-" + kind


class Progress:
    """A progress artifact updated after every cell (keyed by the campaign's ``name``, else its id)."""

    def __init__(self, campaign_id: str, total: int, done: int = 0, name: str | None = None):
        self.campaign_id = campaign_id
        self.total = max(total, 1)
        self.done = done
        self.id: UUID = create_progress_artifact(
            progress=100.0 * done / self.total, key=campaign_key(name or campaign_id, "progress"),
            description=f"cells done for campaign {campaign_id}")
        self._emit("start")

    def _emit(self, kind: str, note: str = "") -> None:
        # the process-local bus: ``benchflow run`` shows it on the terminal; under a worker nobody listens
        terminal.emit(terminal.ProgressEvent(kind, self.campaign_id, self.done, self.total, note))

    def cell_started(self, note: str) -> None:
        self._emit("cell", note)

    def advance(self, note: str) -> None:
        self.done += 1
        update_progress_artifact(self.id, progress=100.0 * self.done / self.total,
                                 description=f"{self.done}/{self.total} cells — last: {note}")
        self._emit("advance", note)


def publish_results(campaign_id: str, campaign: dict[str, Any], cells: Sequence[CellRow | Mapping[str, Any]],
                    aggregates: Sequence[AggregateRow | Mapping[str, Any]],
                    comparisons: Sequence[ComparisonRow | Mapping[str, Any]],
                    results: Results | None = None) -> str:
    """The keyed aggregate and comparison tables and the markdown report (with the campaign's charts
    embedded as SVG when ``results`` is given; they are stored under ``charts/`` too). Returns the
    report's markdown without the charts (it is stored as ``report.md``; the charts are files).
    Keys: ``campaign-<name>-aggregates|comparisons|report``, by the campaign's name."""
    name = campaign.get("name") or campaign_id
    cells = list(iter_dicts(cells))  # the report reads dicts
    aggregates, comparisons = list(iter_dicts(aggregates)), list(iter_dicts(comparisons))
    create_table_artifact(
        key=campaign_key(name, "aggregates"),
        table=[dict(zip(report.AGG_HEADERS, r)) for r in report.aggregate_table_rows(aggregates)],
        description=f"Aggregates across repetitions with 95% CIs, campaign {campaign_id}")
    create_table_artifact(
        key=campaign_key(name, "comparisons"),
        table=[dict(zip(report.CMP_HEADERS, r)) for r in report.comparison_table_rows(comparisons, aggregates)],
        description=f"Backend comparisons with verdicts, campaign {campaign_id}")
    backends = _backends(results, campaign_id)
    markdown = report.render_markdown(campaign, cells, aggregates, comparisons, backends=backends)
    create_markdown_artifact(markdown=markdown + _charts(results, campaign_id),
                             key=campaign_key(name, "report"),
                             description=f"Report of campaign {campaign_id}")
    return markdown


def _backends(results: Results | None, campaign_id: str) -> list[dict[str, Any]] | None:
    if results is None:
        return None
    try:
        return results.store.backends(campaign_id)
    except Exception as e:  # noqa: BLE001 - the report goes out without the setup section
        log.warning("report of %s without its backends' setup: %s", campaign_id, e)
        return None


def _charts(results: Results | None, campaign_id: str) -> str:
    """The campaign's charts as markdown (SVG data URIs); a chart that fails never fails the run."""
    if results is None:
        return ""
    try:
        from benchflow.charts import charts_markdown, render_campaign_charts

        return "\n\n" + charts_markdown(render_campaign_charts(results, campaign_id))
    except Exception as e:  # noqa: BLE001 - charts are a view; the numbers are stored already
        log.warning("charts of campaign %s could not be drawn: %s", campaign_id, e)
        return ""
