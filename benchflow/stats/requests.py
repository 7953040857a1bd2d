"""Per-request metrics (METRICS.md, "Per-request metrics"), derived from raw request records.

Every duration here is in nanoseconds, computed from monotonic ``perf_counter_ns`` timestamps;
the summary converts to milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchflow.records import RequestRecord


@dataclass(slots=True, frozen=True)
class RequestMetrics:
    """The metrics of one successful request (vLLM ``bench serve`` definitions)."""

    request_id: int
    ttft_ns: int
    e2e_ns: int
    #: ``completion_tokens`` from usage, else the number of output messages.
    output_tokens: int
    #: True when ``output_tokens`` is the number of messages because the server sent no usage.
    tokens_estimated: bool
    #: ``None`` when the request produced a single token.
    tpot_ns: float | None
    #: Gaps between consecutive output messages (one per message, not per token).
    itl_ns: tuple[int, ...] = field(default_factory=tuple)
    ntpot_ns: float | None = None
    input_tokens: int | None = None

    def itl_stat_ns(self, stat: str) -> float | None:
        """This request's own ITL at ``stat`` ("mean", "p50", "p99", ...); ``None`` without gaps."""
        if not self.itl_ns:
            return None
        gaps = np.asarray(self.itl_ns, dtype=float)
        if stat == "mean":
            return float(gaps.mean())
        return float(np.percentile(gaps, float(stat.removeprefix("p"))))


def output_tokens_of(record: RequestRecord) -> tuple[int, bool]:
    """``(output_tokens, estimated)``: usage's count, else the number of output messages."""
    if record.completion_tokens is not None:
        return int(record.completion_tokens), False
    return len(record.chunks), True


def request_metrics(record: RequestRecord) -> RequestMetrics | None:
    """Metrics of one request, or ``None`` when it did not succeed (it then has no latency)."""
    if not record.succeeded:
        return None
    times = [t for t, _ in record.chunks]
    ttft = times[0] - record.start_ns
    e2e = times[-1] - record.start_ns
    n_out, estimated = output_tokens_of(record)
    tpot = (e2e - ttft) / (n_out - 1) if n_out > 1 else None
    ntpot = e2e / n_out if n_out > 0 else None
    itl = tuple(b - a for a, b in zip(times, times[1:]))
    return RequestMetrics(
        request_id=record.request_id,
        ttft_ns=ttft,
        e2e_ns=e2e,
        output_tokens=n_out,
        tokens_estimated=estimated,
        tpot_ns=tpot,
        itl_ns=itl,
        ntpot_ns=ntpot,
        input_tokens=record.input_tokens,
    )


def client_lag_ns(record: RequestRecord) -> int | None:
    """How late the client itself was (open loop): when the request was handed on for sending
    (``queued_ns``; the actual send for records without it) minus its intended send. A wait for a
    free ``max_concurrency`` slot is not lag: it is the client queue time (``start_ns − queued_ns``).
    ``None`` without a schedule."""
    if record.scheduled_ns is None:
        return None
    handed_on = record.queued_ns if record.queued_ns is not None else record.start_ns
    return handed_on - record.scheduled_ns


def last_known_ns(record: RequestRecord) -> int:
    """When the request ended: ``end_ns``, else its last output message, else its send."""
    if record.end_ns is not None:
        return record.end_ns
    if record.chunks:
        return max(t for t, _ in record.chunks)
    return record.start_ns


def error_class_of(record: RequestRecord) -> str:
    """The error class of a failed (not incomplete) request, derived from status if unset."""
    if record.error_class:
        return record.error_class
    status = record.status
    if status is not None and 400 <= status < 500:
        return "http_4xx"
    if status is not None and status >= 500:
        return "http_5xx"
    if status is not None and 200 <= status < 300:
        return "no_output"
    return "unknown"
