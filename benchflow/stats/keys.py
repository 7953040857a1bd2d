"""Summary keys as metrics: reading one value from a summary, and which direction is better."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from benchflow.errors import SpecError
from benchflow.stats.summary import DIST_KEYS, LATENCY_METRICS

#: Scalar summary keys where more is better.
HIGHER_IS_BETTER = frozenset({
    "request_throughput", "output_throughput", "total_throughput", "goodput", "slo_attainment",
    "completed", "achieved_rate", "active_output_throughput",
})
#: Scalar summary keys where less is better.
LOWER_IS_BETTER = frozenset({
    "error_rate", "failed", "incomplete", "duration_s", "energy_j", "joules_per_output_token",
    "work_outside_active_fraction",
})


def _split(key: str) -> tuple[str, str | None]:
    head, _, tail = key.partition(".")
    return head, tail or None


def is_metric_key(key: str) -> bool:
    """True for "ttft_ms.p99"-style latency keys, "errors.<class>" and the scalar keys above."""
    head, tail = _split(key)
    if head in {f"{m}_ms" for m in LATENCY_METRICS}:
        return tail in DIST_KEYS
    if head == "errors":
        return tail is not None
    return tail is None and (head in HIGHER_IS_BETTER or head in LOWER_IS_BETTER)


def higher_is_better(key: str) -> bool:
    """Throughput, goodput, SLO attainment and completed: higher; latencies and errors: lower.

    Raises :class:`SpecError` for a key that is not a comparable metric.
    """
    if not is_metric_key(key):
        raise SpecError(f"{key}: not a comparable metric (e.g. 'ttft_ms.p99', 'output_throughput')")
    return _split(key)[0] in HIGHER_IS_BETTER


def metric_value(summary: Mapping[str, Any], key: str) -> float | None:
    """``summary``'s value under ``key`` ("ttft_ms.p99", "output_throughput", "errors.timeout")
    as a float; ``None`` when it is absent, undefined or not a finite number."""
    head, tail = _split(key)
    if head == "errors" and tail and isinstance(summary.get("errors"), Mapping):
        return float(summary["errors"].get(tail, 0))  # a class that never happened counts 0
    value: Any = summary
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
