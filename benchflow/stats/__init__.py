"""Statistics (METRICS.md): per-request metrics, the per-cell summary, the active window and
energy, aggregates across repetitions (bootstrap and t intervals) and comparisons (Welch
interval of the log ratio of means).

Modules: ``requests`` (per request), ``slo``, ``summary`` (per cell), ``window`` (active window,
energy), ``inference`` (aggregates across repetitions), ``compare`` (two backends), ``keys`` (summary keys as metrics).
"""

from __future__ import annotations

from benchflow.stats.compare import METHOD as COMPARISON_METHOD
from benchflow.stats.compare import Comparison, compare, repetitions_needed, verdict
from benchflow.stats.inference import Aggregate, aggregate, t_interval
from benchflow.stats.keys import MetricKey, higher_is_better, is_metric_key, metric_value
from benchflow.stats.requests import RequestMetrics, client_lag_ns, request_metrics
from benchflow.stats.slo import SLO_METRICS, SLO_STATS, request_meets_slo, validate_slo
from benchflow.stats.summary import (
    DIST_KEYS,
    LATENCY_METRICS,
    achieved_rate,
    distribution_ms,
    invalid_reason,
    measurement_window,
    summarize,
)
from benchflow.stats.window import (
    active_window,
    active_window_summary,
    energy_joules,
    joules_per_output_token,
    output_token_times,
)

__all__ = [
    "Aggregate", "COMPARISON_METHOD", "Comparison", "DIST_KEYS", "LATENCY_METRICS", "MetricKey",
    "RequestMetrics", "SLO_METRICS", "SLO_STATS",
    "achieved_rate", "active_window", "active_window_summary", "aggregate", "client_lag_ns", "compare",
    "distribution_ms", "energy_joules", "higher_is_better", "invalid_reason", "is_metric_key",
    "joules_per_output_token", "measurement_window", "metric_value", "output_token_times",
    "repetitions_needed", "request_meets_slo", "request_metrics", "summarize", "t_interval", "validate_slo", "verdict",
]
