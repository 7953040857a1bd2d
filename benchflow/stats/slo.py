"""Service-level objectives: the per-request check behind goodput and the per-cell verdict.

An SLO is ``{metric: {stat: seconds}}``, e.g. ``{"ttft": {"p99": 0.5}, "tpot": {"p90": 0.05}}``.
Per request (goodput, ``slo_attainment``), ``ttft``, ``tpot``, ``e2e`` and ``ntpot`` compare the
request's own value with the threshold, whatever stat it is filed under; ``itl`` compares the
request's own ITL at that stat (the p99 of its gaps, or their mean for ``"mean"``). A request
without a value (one token: no ``tpot``; one message: no ``itl``) passes that objective.
Per cell (``slo_met``), the cell's statistic (e.g. its p99 TTFT) is compared with the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchflow.errors import SpecError
from benchflow.stats.requests import RequestMetrics

SLO_METRICS = ("ttft", "tpot", "itl", "e2e", "ntpot")
SLO_STATS = ("mean", "p50", "p90", "p95", "p99")

Slo = Mapping[str, Mapping[str, float]]


def validate_slo(slo: Slo) -> None:
    """Raises :class:`SpecError` listing every unknown metric/stat or bad threshold."""
    problems: list[str] = []
    for metric, stats in slo.items():
        if metric not in SLO_METRICS:
            problems.append(f"slo.{metric}: unknown metric (expected one of {', '.join(SLO_METRICS)})")
            continue
        if not isinstance(stats, Mapping):
            problems.append(f"slo.{metric}: expected a mapping of stat to seconds")
            continue
        for stat, threshold in stats.items():
            if stat not in SLO_STATS:
                problems.append(f"slo.{metric}.{stat}: unknown stat (expected one of {', '.join(SLO_STATS)})")
            elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 0:
                problems.append(f"slo.{metric}.{stat}: threshold must be a positive number of seconds")
    if problems:
        raise SpecError(problems)


def _request_value_ns(m: RequestMetrics, metric: str, stat: str) -> float | None:
    if metric == "itl":
        return m.itl_stat_ns(stat)
    return {"ttft": m.ttft_ns, "tpot": m.tpot_ns, "e2e": m.e2e_ns, "ntpot": m.ntpot_ns}[metric]


def request_meets_slo(m: RequestMetrics, slo: Slo) -> bool:
    """True when the request meets every objective of ``slo``."""
    for metric, stats in slo.items():
        for stat, threshold_s in stats.items():
            value = _request_value_ns(m, metric, stat)
            if value is not None and value > threshold_s * 1e9:
                return False
    return True


def cell_slo_violations(summary: Mapping[str, Any], slo: Slo) -> list[str]:
    """Each objective the cell's own statistic misses, as "ttft p99 612.3 ms > 500 ms".

    A statistic with no data fails only when the cell has no successful request at all (with
    successful requests, a missing ``tpot``/``itl`` means single-token answers, which pass).
    """
    violations: list[str] = []
    for metric, stats in slo.items():
        for stat, threshold_s in stats.items():
            limit_ms = threshold_s * 1000.0
            value_ms = summary[f"{metric}_ms"][stat]
            if value_ms is None:
                if not summary["completed"]:
                    violations.append(f"{metric} {stat}: no successful requests")
            elif value_ms > limit_ms:
                violations.append(f"{metric} {stat} {value_ms:.1f} ms > {limit_ms:g} ms")
    return violations
