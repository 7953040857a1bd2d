"""The per-cell summary (METRICS.md, "Per-cell metrics"): one JSON-ready dict per measured run.

Its shape is the one ``benchflow bench --json`` prints and the results database stores.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchflow import SCHEMA_VERSION
from benchflow.metric_key import DIST_KEYS, LATENCY_METRICS
from benchflow.records import LoadRun, RequestRecord
from benchflow.spec import LimitsSpec
from benchflow.stats.requests import (
    RequestMetrics,
    client_lag_ns,
    error_class_of,
    last_known_ns,
    request_metrics,
)
from benchflow.stats.slo import Slo, cell_slo_violations, request_meets_slo, validate_slo

logger = logging.getLogger(__name__)

#: Keys of every distribution block, and the latency blocks (ms): one definition, in the leaf
#: :mod:`benchflow.metric_key` (DIST_KEYS, LATENCY_METRICS are imported above).

#: The validity limits when a caller passes none: the spec's ``LimitsSpec`` defaults (one definition).
#: (``saturation`` is the nested block of the early stop: :mod:`benchflow.saturation`.)
DEFAULT_LIMITS: dict[str, Any] = LimitsSpec().model_dump()


def distribution_ms(values_ns: Sequence[float]) -> dict[str, float | int | None]:
    """mean, p50, p90, p95, p99, min, max (ms, ``numpy.percentile`` linear) and count.

    With no values every statistic is ``None`` (never 0) and count is 0.
    """
    if len(values_ns) == 0:
        return {**{k: None for k in DIST_KEYS[:-1]}, "count": 0}
    ms = np.asarray(values_ns, dtype=float) / 1e6
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "mean": float(ms.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "count": int(ms.size),
    }


def measured_records(run: LoadRun) -> list[RequestRecord]:
    """The records that count: every request except warm-up."""
    return [r for r in run.records if not r.warmup]


def measurement_window(run: LoadRun) -> tuple[int, int] | None:
    """``(first measured send, last measured end)`` in ns; ``None`` without measured requests.

    Failed requests' ends count; an incomplete request ends at its last known time (the stop of
    the cell), and the tokens it had been served by then count in the throughput. Warm-up
    requests have all ended before the first measured send (the load generator runs them as a
    phase of their own), so no token served inside the window is left out.
    """
    measured = measured_records(run)
    if not measured:
        return None
    return min(r.start_ns for r in measured), max(last_known_ns(r) for r in measured)


def _limit(limits: Any, name: str) -> float:
    if limits is None:
        return DEFAULT_LIMITS[name]
    value = limits.get(name) if isinstance(limits, Mapping) else getattr(limits, name, None)
    return DEFAULT_LIMITS[name] if value is None else float(value)


def _per_second(count: float | None, duration_s: float | None) -> float | None:
    if count is None or not duration_s or duration_s <= 0:
        return None
    return float(count) / duration_s


def client_queue_ns(record: RequestRecord) -> int | None:
    """Open loop: how long the request waited in the client's own queue for a free slot
    (``max_concurrency``) before it was sent: ``start_ns − queued_ns``; ``None`` without one."""
    return None if record.queued_ns is None else record.start_ns - record.queued_ns


def _latency_blocks(metrics: list[RequestMetrics], measured: list[RequestRecord]) -> dict[str, Any]:
    lags = [lag for r in measured if (lag := client_lag_ns(r)) is not None]
    queue = {r.request_id: q for r in measured if (q := client_queue_ns(r)) is not None}
    return {
        "ttft_ms": distribution_ms([m.ttft_ns for m in metrics]),
        "tpot_ms": distribution_ms([m.tpot_ns for m in metrics if m.tpot_ns is not None]),
        "itl_ms": distribution_ms([gap for m in metrics for gap in m.itl_ns]),
        "e2e_ms": distribution_ms([m.e2e_ns for m in metrics]),
        "ntpot_ms": distribution_ms([m.ntpot_ns for m in metrics if m.ntpot_ns is not None]),
        "client_lag_ms": distribution_ms(lags),
        # vLLM's coordinated-omission fix: the same latencies counted from when the request was due
        "client_queue_time_ms": distribution_ms(list(queue.values())),
        "ttft_including_client_queue_ms": distribution_ms([m.ttft_ns + queue.get(m.request_id, 0) for m in metrics]),
        "e2e_including_client_queue_ms": distribution_ms([m.e2e_ns + queue.get(m.request_id, 0) for m in metrics]),
    }


def _token_totals(metrics: list[RequestMetrics], input_tokens_fallback: bool) -> dict[str, Any]:
    total_out = sum(m.output_tokens for m in metrics)
    missing_in = sum(1 for m in metrics if m.input_tokens is None)
    if missing_in and not input_tokens_fallback:
        total_in = None
    else:
        if missing_in:
            logger.debug("%s successful requests have no input token count; counted as 0", missing_in)
        total_in = sum(m.input_tokens or 0 for m in metrics)
    return {
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "tokens_estimated": any(m.tokens_estimated for m in metrics),
    }


def delivered_by_incomplete(measured: Sequence[RequestRecord], metrics: Sequence[RequestMetrics]) -> tuple[float, int]:
    """``(output tokens, input tokens)`` that requests still in flight when the cell stopped
    (``incomplete``) had been served: their output messages' token counts when every message
    has one, else their message count times the cell's tokens per message (from its successful
    requests; 1 without any). Input tokens count for the requests that had output (their
    prefill was done inside the window)."""
    cut = [r for r in measured if r.incomplete and r.chunks]
    if not cut:
        return 0.0, 0
    n_messages = sum(len(m.itl_ns) + 1 for m in metrics)  # one more message than gaps
    per_message = sum(m.output_tokens for m in metrics) / n_messages if n_messages else 1.0
    out = 0.0
    for r in cut:
        counts = [n for _, n in r.chunks]
        out += sum(counts) if all(n is not None for n in counts) else len(counts) * per_message
    return out, sum(r.input_tokens or 0 for r in cut)


def _throughputs(totals: dict[str, Any], completed: int, duration_s: float | None,
                 cut: tuple[float, int]) -> dict[str, Any]:
    """Throughput over the measurement window counts every token served inside it: those of
    the successful requests and those the requests cut off by the end of the cell had been
    served (``incomplete_output_tokens``; METRICS.md, "Measurement window")."""
    total_in = totals["total_input_tokens"]
    out = totals["total_output_tokens"] + cut[0]
    both = None if total_in is None else total_in + cut[1] + out
    return {
        "request_throughput": _per_second(completed, duration_s),
        "output_throughput": _per_second(out, duration_s),
        "total_throughput": _per_second(both, duration_s),
        "incomplete_output_tokens": round(cut[0], 3),
    }


def _errors(measured: list[RequestRecord], completed: int) -> dict[str, Any]:
    failed = [r for r in measured if not r.succeeded and not r.incomplete]
    attempted = completed + len(failed)
    return {
        "completed": completed,
        "failed": len(failed),
        "incomplete": sum(1 for r in measured if r.incomplete),
        "errors": dict(sorted(Counter(error_class_of(r) for r in failed).items())),
        "error_rate": len(failed) / attempted if attempted else None,
    }


def achieved_rate(measured: Sequence[RequestRecord]) -> float | None:
    """Measured sends per second over the send window: (n − 1) / (last send − first send)."""
    if len(measured) < 2:
        return None
    starts = [r.start_ns for r in measured]
    span_ns = max(starts) - min(starts)
    return (len(starts) - 1) / (span_ns / 1e9) if span_ns > 0 else None


def _slo_block(metrics: list[RequestMetrics], slo: Slo | None, duration_s: float | None,
               partial: dict[str, Any]) -> dict[str, Any]:
    if not slo:
        return {"goodput": None, "slo_attainment": None, "slo_met": None, "slo_violations": []}
    good = sum(1 for m in metrics if request_meets_slo(m, slo))
    violations = cell_slo_violations(partial, slo)
    return {
        "goodput": _per_second(good, duration_s),
        "slo_attainment": good / len(metrics) if metrics else None,
        "slo_met": not violations,
        "slo_violations": violations,
    }


def invalid_reason(summary: Mapping[str, Any], limits: Any = None) -> str | None:
    """Why a cell is invalid ("; "-joined), or ``None``. The cell is kept and flagged, not dropped."""
    reasons: list[str] = []
    target, achieved = summary.get("target_rate"), summary.get("achieved_rate")
    min_fraction = _limit(limits, "min_rate_fraction")
    if summary.get("mode") == "open" and target and achieved is not None and achieved < min_fraction * target:
        reasons.append(f"achieved rate {achieved:.3g} req/s is below {min_fraction:.0%} of the target {target:g} req/s")
    lag_p99_ms, lag_limit_s = summary["client_lag_ms"]["p99"], _limit(limits, "client_lag_p99_s")
    if lag_p99_ms is not None and lag_p99_ms > lag_limit_s * 1000.0:
        reasons.append(f"client lag p99 {lag_p99_ms:.1f} ms exceeds {lag_limit_s * 1000.0:g} ms")
    error_rate, max_error_rate = summary.get("error_rate"), _limit(limits, "max_error_rate")
    if error_rate is not None and error_rate > max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} exceeds the limit {max_error_rate:.1%}")
    if error_rate is None:
        reasons.append("no measured request completed or failed")
    return "; ".join(reasons) or None


def summarize(run: LoadRun, *, slo: Slo | None = None, limits: Any = None,
              input_tokens_fallback: bool = True) -> dict[str, Any]:
    """The per-cell summary of ``run`` (METRICS.md). JSON-ready: plain ints, floats, None, str.

    ``slo`` is ``{metric: {stat: seconds}}``; ``limits`` is a LimitsSpec-like object or a dict
    with ``max_error_rate``, ``client_lag_p99_s`` and ``min_rate_fraction``. With
    ``input_tokens_fallback`` a successful request with no input token count counts 0 input
    tokens; without it, ``total_input_tokens`` and ``total_throughput`` are ``None`` then.
    """
    if slo:
        validate_slo(slo)
    measured = measured_records(run)
    metrics = [m for r in measured if (m := request_metrics(r)) is not None]
    window = measurement_window(run)
    duration_s = (window[1] - window[0]) / 1e9 if window else None
    totals = _token_totals(metrics, input_tokens_fallback)
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    out.update(_latency_blocks(metrics, measured))
    out.update(_throughputs(totals, len(metrics), duration_s, delivered_by_incomplete(measured, metrics)))
    out.update(_errors(measured, len(metrics)))
    out.update(_slo_block(metrics, slo, duration_s, out))
    out.update(totals)
    out.update({
        "duration_s": duration_s,
        "target_rate": run.target_rate,
        "achieved_rate": achieved_rate(measured),
        "mode": run.mode,
        "concurrency": run.concurrency,
    })
    out["invalid"] = invalid_reason(out, limits)
    return out
