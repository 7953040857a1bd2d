"""Summary keys as metrics: :class:`MetricKey`, parsed once from "ttft_ms.p99", reading one value
from a summary, and which direction is better.

A leaf module (it imports only :mod:`benchflow.errors`): the spec validates its metric keys with it
(:func:`check_summary_metric`), and the statistics, the store and the reports read summaries with it,
so the vocabulary of summary keys has one definition. :mod:`benchflow.stats.keys` re-exports it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from benchflow.errors import SpecError

#: Keys of every distribution block, in order.
DIST_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max", "count")
#: The latency blocks of a summary (all in milliseconds).
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e", "ntpot", "client_lag", "client_queue_time",
                   "ttft_including_client_queue", "e2e_including_client_queue")

#: Scalar summary keys where more is better.
HIGHER_IS_BETTER = frozenset({
    "request_throughput", "output_throughput", "total_throughput", "goodput", "slo_attainment",
    "completed", "achieved_rate", "active_output_throughput",
    # an external driver's (benchflow.driver; docs/metrics.md, "External driver")
    "tasks_done", "steps_done", "tasks_per_min", "steps_per_s", "active_tasks_per_min", "active_steps_per_s",
})
#: Scalar summary keys where less is better.
LOWER_IS_BETTER = frozenset({
    "error_rate", "failed", "incomplete", "duration_s", "energy_j", "joules_per_output_token",
    "work_outside_active_fraction",
    "tasks_unfinished", "driver_error_lines", "tasks_outside_active_fraction", "steps_outside_active_fraction",
})
#: The latency blocks of a summary as keys ("ttft_ms", ...).
LATENCY_BLOCKS = tuple(f"{m}_ms" for m in LATENCY_METRICS)

_WORDS = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "itl_ms": "ITL", "e2e_ms": "end-to-end latency",
          "ntpot_ms": "NTPOT", "client_lag_ms": "client lag"}
_UNITS = {"request_throughput": "req/s", "output_throughput": "tok/s", "total_throughput": "tok/s",
          "active_output_throughput": "tok/s", "goodput": "req/s", "achieved_rate": "req/s",
          "duration_s": "s", "energy_j": "J", "joules_per_output_token": "J/tok",
          "completed": "requests", "failed": "requests", "incomplete": "requests", "errors": "requests",
          "tasks_done": "tasks", "steps_done": "steps", "tasks_unfinished": "tasks", "driver_error_lines": "lines",
          "tasks_per_min": "tasks/min", "active_tasks_per_min": "tasks/min", "steps_per_s": "steps/s",
          "active_steps_per_s": "steps/s"}
_EXAMPLE = "(e.g. 'ttft_ms.p99', 'output_throughput', 'errors.timeout')"


@dataclass(frozen=True, order=True)
class MetricKey:
    """One summary metric: ``metric`` ("ttft_ms", "output_throughput", "errors") and ``stat``
    ("p99", an error class, or ``None`` for a scalar). Build it with :meth:`parse`."""

    metric: str
    stat: str | None = None

    def __post_init__(self) -> None:
        if not _valid(self.metric, self.stat):
            raise SpecError([f"{self.key}: not a comparable metric {_EXAMPLE}"])

    @classmethod
    def parse(cls, key: str | MetricKey) -> MetricKey:
        """``"ttft_ms.p99"`` -> ``MetricKey("ttft_ms", "p99")``; raises :class:`SpecError` otherwise."""
        if isinstance(key, MetricKey):
            return key
        if not isinstance(key, str):
            raise SpecError([f"{key!r}: a metric key is a string {_EXAMPLE}"])
        return _parse(key)

    @property
    def key(self) -> str:
        """The summary key: "ttft_ms.p99", "output_throughput"."""
        return self.metric if self.stat is None else f"{self.metric}.{self.stat}"

    @property
    def column(self) -> str:
        """The database column name: "ttft_ms_p99", "output_throughput"."""
        return self.metric if self.stat is None else f"{self.metric}_{self.stat}"

    @property
    def is_latency(self) -> bool:
        return self.metric in LATENCY_BLOCKS

    @property
    def unit(self) -> str:
        """"ms" for latencies, "tok/s", "req/s", ... ; "" for a fraction or a ratio."""
        return "ms" if self.is_latency else _UNITS.get(self.metric, "")

    @property
    def label(self) -> str:
        """For humans: "TTFT p99 (ms)", "output throughput (tok/s)", "errors: timeout (requests)"."""
        if self.is_latency:
            words = f"{_WORDS.get(self.metric, self.metric)} {self.stat}"
        elif self.metric == "errors":
            words = f"errors: {self.stat}"
        else:
            words = self.metric.replace("_", " ")
        return f"{words} ({self.unit})" if self.unit else words

    @property
    def higher_is_better(self) -> bool:
        """Throughput, goodput, SLO attainment and completed: higher; latencies and errors: lower."""
        return self.stat is None and self.metric in HIGHER_IS_BETTER

    def raw(self, summary: Mapping[str, Any]) -> Any:
        """The value stored under this key in ``summary`` as it is (``None`` when absent)."""
        value = summary.get(self.metric)
        if self.stat is None:
            return value
        return value.get(self.stat) if isinstance(value, Mapping) else None

    def value(self, summary: Mapping[str, Any]) -> float | None:
        """The value as a float; ``None`` when absent, undefined or not a finite number
        (an error class that never happened counts 0)."""
        if self.metric == "errors" and isinstance(summary.get("errors"), Mapping):
            return float(summary["errors"].get(self.stat, 0))
        value = self.raw(summary)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def __str__(self) -> str:
        return self.key


def _valid(metric: str, stat: str | None) -> bool:
    if metric in LATENCY_BLOCKS:
        return stat in DIST_KEYS
    if metric == "errors":
        return bool(stat)
    return stat is None and (metric in HIGHER_IS_BETTER or metric in LOWER_IS_BETTER)


@lru_cache(maxsize=1024)
def _parse(key: str) -> MetricKey:
    head, dot, tail = key.partition(".")
    if dot and not tail:
        raise SpecError([f"{key}: not a comparable metric {_EXAMPLE}"])
    return MetricKey(head, tail or None)


def is_metric_key(key: str) -> bool:
    """True for "ttft_ms.p99"-style latency keys, "errors.<class>" and the scalar keys above."""
    try:
        MetricKey.parse(key)
    except SpecError:
        return False
    return True


def higher_is_better(key: str | MetricKey) -> bool:
    """Throughput, goodput, SLO attainment and completed: higher; latencies and errors: lower.

    Raises :class:`SpecError` for a key that is not a comparable metric.
    """
    return MetricKey.parse(key).higher_is_better


def metric_value(summary: Mapping[str, Any], key: str | MetricKey) -> float | None:
    """``summary``'s value under ``key`` ("ttft_ms.p99", "output_throughput", "errors.timeout")
    as a float; ``None`` when it is absent, undefined or not a finite number, or when ``key``
    is not a metric."""
    try:
        parsed = MetricKey.parse(key)
    except SpecError:
        return _path_value(summary, str(key))
    return parsed.value(summary)


def _path_value(summary: Mapping[str, Any], key: str) -> float | None:
    """A key outside the metric vocabulary (kept for callers reading other summary fields)."""
    value: Any = summary
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


#: The latency blocks and statistics, and the scalars, that a spec may name as a compared metric,
#: a regression metric or a tuning objective (a subset of what :class:`MetricKey` parses).
SUMMARY_DISTRIBUTIONS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ntpot_ms", "client_lag_ms")
SUMMARY_STATS = ("mean", "p50", "p90", "p95", "p99", "min", "max")
SUMMARY_SCALARS = (
    "request_throughput", "output_throughput", "total_throughput", "goodput", "slo_attainment", "error_rate",
    "achieved_rate", "completed", "failed",
    # an external driver's (benchflow.driver)
    "tasks_done", "steps_done", "tasks_per_min", "steps_per_s", "active_tasks_per_min", "active_steps_per_s",
    "tasks_unfinished", "tasks_outside_active_fraction", "steps_outside_active_fraction",
)


def check_summary_metric(key: str) -> str:
    """``key`` when a spec may name it as a metric; ``ValueError`` (pydantic reports it with its path)
    otherwise. Parsed by :class:`MetricKey`, then held to the spec's vocabulary."""
    try:
        parsed: MetricKey | None = MetricKey.parse(key)
    except SpecError:
        parsed = None
    if parsed is not None and (
            (parsed.metric in SUMMARY_DISTRIBUTIONS and parsed.stat in SUMMARY_STATS)
            or (parsed.stat is None and parsed.metric in SUMMARY_SCALARS)):
        return key
    raise ValueError(
        f"unknown summary metric {key!r}; use <{'|'.join(SUMMARY_DISTRIBUTIONS)}>.<{'|'.join(SUMMARY_STATS)}> "
        f"or one of {', '.join(SUMMARY_SCALARS)}"
    )
