"""Campaign-level statistics: aggregates across repetitions and comparisons between backends.

Outputs are typed records (:class:`~benchflow.results_types.AggregateRow`,
:class:`~benchflow.results_types.ComparisonRow`; they also answer dict-style reads).
Input rows are :class:`~benchflow.results_types.CellResult` records: a campaign's stored cells
joined with their summaries (:func:`benchflow.campaign.analysis_input`); plain dicts with the same
keys are accepted and validated once. Only completed cells that are not marked invalid contribute;
the unit is the cell (METRICS.md, "Across repetitions").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from benchflow import stats
from benchflow.results_types import AggregateRow, CellResult, ComparisonRow, cell_results
from benchflow.spec import CampaignSpec, CompareSpec
from benchflow.stats.compare import INSUFFICIENT, Comparison
from benchflow.stats.keys import MetricKey

#: The comparison tolerance when a caller passes none: the spec's default (one definition).
DEFAULT_COMPARE_TOLERANCE: float = CompareSpec.model_fields["tolerance"].default


#: What the analysis takes: typed rows, or dicts with their keys.
Rows = Iterable[CellResult | Mapping[str, Any]]


def metrics_of(spec: CampaignSpec) -> list[str]:
    """The summary keys a campaign aggregates and compares (the spec's default list when unset)."""
    return list(spec.compare.metrics)


def _usable(row: CellResult) -> bool:
    """A completed cell not marked invalid. A ``saturated`` cell (stopped early because the server
    no longer kept up) is left out like an invalid one; its summary's ``invalid`` says why."""
    return row.valid


def group_values(rows: Rows, metrics: list[str]) -> dict[tuple[str, str, str], list[float]]:
    """``(backend, load_label, metric) -> [one value per usable cell]`` (None values dropped)."""
    out: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in cell_results(rows):
        if not _usable(row):
            continue
        summary = row.summary.to_dict()
        for metric in metrics:
            value = stats.metric_value(summary, metric)
            values = out[(row.backend_name, row.load_label, metric)]  # present even when all are None
            if value is not None:
                values.append(float(value))
    return out


def aggregate_rows(rows: Rows, metrics: list[str], seed: int = 0) -> list[AggregateRow]:
    """One aggregate row per (backend, load point, metric)."""
    result = []
    for (backend, load, metric), values in sorted(group_values(rows, metrics).items()):
        agg = stats.aggregate(values, seed=seed).to_dict()
        result.append(AggregateRow.model_validate({"backend_name": backend, "load_label": load, "metric": metric,
                                                   **agg, "values": values}))
    return result


def dominant(reasons: list[str]) -> tuple[str, int] | None:
    """The most frequent reason and how often it occurs (the first seen wins a tie)."""
    counts = Counter(r.strip().splitlines()[0] for r in reasons if r and r.strip())
    return counts.most_common(1)[0] if counts else None


def unusable_reason(rows: Rows, backend: str, load: str) -> str:
    """Why ``backend`` has no usable cell at ``load``: its cells by outcome and the dominant cause
    (a failed cell's ``error`` when the row carries one; a completed or saturated cell's ``summary["invalid"]``)."""
    cells = [r for r in cell_results(rows) if r.backend_name == backend and r.load_label == load]
    outcome = Counter("invalid" if r.status == "completed" else r.status for r in cells)
    counts = ", ".join(f"{n} {what}" for what, n in sorted(outcome.items()))
    causes = [(r.error if r.status not in ("completed", "saturated") else r.summary.invalid or r.error) or ""
              for r in cells]
    top = dominant(causes)
    return f"no valid cells of {backend} at {load} ({counts})" + (f": {top[0]}" if top else "")


def comparison_rows(
    rows: Rows, metrics: list[str], baseline: str,
    tolerance: float = DEFAULT_COMPARE_TOLERANCE, seed: int = 0,
) -> list[ComparisonRow]:
    """Every other backend against ``baseline``, per load point and metric (``seed`` is unused:
    comparisons are analytic; it stays for callers).

    A pair whose cells exist but are all failed or invalid on a side gets an "insufficient data"
    row whose ``reason`` says so, instead of no row at all.
    """
    rows = cell_results(rows)
    grouped = group_values(rows, metrics)
    present = {(r.backend_name, r.load_label) for r in rows}
    candidates = sorted({b for b, _ in present if b != baseline})
    result = []
    for load in sorted({lo for b, lo in present if b == baseline}):
        for metric in sorted(metrics):
            base_values = grouped.get((baseline, load, metric))
            for cand in candidates:
                if (cand, load) not in present:
                    continue
                cand_values = grouped.get((cand, load, metric))
                where = {"kind": "backends", "baseline_ref": baseline, "candidate_ref": cand, "load_label": load,
                         "metric": metric, "tolerance": tolerance}
                if base_values is None or cand_values is None:
                    reason = "; ".join(unusable_reason(rows, b, load)
                                       for b, v in ((baseline, base_values), (cand, cand_values)) if v is None)
                    result.append(ComparisonRow(**where, ratio=None, ci_low=None, ci_high=None,
                                                verdict=INSUFFICIENT, method=stats.COMPARISON_METHOD,
                                                reason=reason))
                    continue
                higher = MetricKey.parse(metric).higher_is_better
                cmp = stats.compare(base_values, cand_values, higher_is_better=higher, tolerance=tolerance)
                result.append(ComparisonRow(**where, **_cmp_dict(cmp)))
    return result


#: Keys of a stats.Comparison kept in a comparison row. ``method`` and ``reason`` (the note: why
#: "not enough repetitions" / "insufficient data", or what n would decide) have their own columns;
#: the rest lands in the row's ``detail``.
_ROW_KEYS = ("ratio", "ci_low", "ci_high", "verdict", "method", "confidence", "n_baseline", "n_candidate",
             "n_needed", "baseline_mean", "candidate_mean")


def _cmp_dict(cmp: Comparison) -> dict[str, Any]:
    d = cmp.to_dict()
    return {**{k: d.get(k) for k in _ROW_KEYS}, "reason": d.get("note")}


def baseline_of(spec: CampaignSpec) -> str:
    return spec.compare.baseline or spec.backends[0].name


def tolerance_of(spec: CampaignSpec) -> float:
    return float(spec.compare.tolerance)
