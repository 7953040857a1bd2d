"""Campaign-level statistics: aggregates across repetitions and comparisons between backends.

Outputs are typed records (:class:`~benchflow.results_types.AggregateRow`,
:class:`~benchflow.results_types.ComparisonRow`; they also answer dict-style reads).
Input rows are what the results store returns for a campaign's cells joined with their summaries
(``{"cell_id", "backend_name", "load_label", "status", "summary": {...}}``). Only completed cells
that are not marked invalid contribute; the unit is the cell (METRICS.md, "Across repetitions").
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from benchflow import stats
from benchflow.results_types import AggregateRow, ComparisonRow
from benchflow.spec import CompareSpec
from benchflow.stats.keys import MetricKey

#: The comparison tolerance when a caller passes none: the spec's default (one definition).
DEFAULT_COMPARE_TOLERANCE: float = CompareSpec.model_fields["tolerance"].default

def metrics_of(spec: Any) -> list[str]:
    """The summary keys a campaign aggregates and compares (the spec's default list when unset)."""
    return list(spec.compare.metrics)


def _usable(row: dict[str, Any]) -> bool:
    summary = row.get("summary") or {}
    return row.get("status") == "completed" and not summary.get("invalid")


def group_values(rows: list[dict[str, Any]], metrics: list[str]) -> dict[tuple[str, str, str], list[float]]:
    """``(backend, load_label, metric) -> [one value per usable cell]`` (None values dropped)."""
    out: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in rows:
        if not _usable(row):
            continue
        for metric in metrics:
            value = stats.metric_value(row["summary"], metric)
            values = out[(row["backend_name"], row["load_label"], metric)]  # present even when all are None
            if value is not None:
                values.append(float(value))
    return out


def aggregate_rows(rows: list[dict[str, Any]], metrics: list[str], seed: int = 0) -> list[AggregateRow]:
    """One aggregate row per (backend, load point, metric)."""
    result = []
    for (backend, load, metric), values in sorted(group_values(rows, metrics).items()):
        agg = stats.aggregate(values, seed=seed).to_dict()
        result.append(AggregateRow.model_validate({"backend_name": backend, "load_label": load, "metric": metric,
                                                   **agg, "values": values}))
    return result


def comparison_rows(
    rows: list[dict[str, Any]], metrics: list[str], baseline: str,
    tolerance: float = DEFAULT_COMPARE_TOLERANCE, seed: int = 0,
) -> list[ComparisonRow]:
    """Every other backend against ``baseline``, per load point and metric."""
    grouped = group_values(rows, metrics)
    candidates = sorted({b for b, _, _ in grouped if b != baseline})
    result = []
    for (b, load, metric), base_values in sorted(grouped.items()):
        if b != baseline:
            continue
        for cand in candidates:
            cand_values = grouped.get((cand, load, metric))
            if cand_values is None:
                continue
            higher = MetricKey.parse(metric).higher_is_better
            cmp = stats.compare(base_values, cand_values, higher_is_better=higher, tolerance=tolerance, seed=seed)
            result.append(ComparisonRow(kind="backends", baseline_ref=baseline, candidate_ref=cand, load_label=load,
                                        metric=metric, tolerance=tolerance, **_cmp_dict(cmp)))
    return result


def _cmp_dict(cmp: Any) -> dict[str, Any]:
    d = cmp.to_dict() if hasattr(cmp, "to_dict") else dict(vars(cmp))
    return {k: d.get(k) for k in ("ratio", "ci_low", "ci_high", "verdict")}


def baseline_of(spec: Any) -> str:
    return spec.compare.baseline or spec.backends[0].name


def tolerance_of(spec: Any) -> float:
    return float(spec.compare.tolerance)
