"""Replaying a trace's send times: :class:`TraceLoad`, the open-loop load point the load generator
sends at fixed offsets (``send_offsets_ns``), and the send-time error of a replay.
See :mod:`benchflow.traces` for the format and the prompts."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from benchflow.errors import SpecError
from benchflow.spec import RateLoad
from benchflow.traces import TraceRequest


class TraceLoad(RateLoad):
    """Open loop at recorded send times: ``offsets_ms`` (from the first request) times
    ``time_scale``. ``rate`` is the trace's mean rate (what the summary calls the target)."""

    offsets_ms: tuple[float, ...] = Field(..., min_length=1, description="send offsets, ms from the first")
    time_scale: float = Field(1.0, gt=0, description="multiplies every offset (0.5: twice as fast)")
    name: str = Field("trace", description="label")

    @property
    def label(self) -> str:
        return self.name + (f"-x{self.time_scale:g}" if self.time_scale != 1.0 else "")

    def send_offsets_ns(self, n: int | None = None) -> list[int]:
        """The first ``n`` (all when None) send offsets in ns, as the load generator uses them."""
        offsets = self.offsets_ms if n is None else self.offsets_ms[:n]
        return [round(ms * self.time_scale * 1e6) for ms in offsets]


def trace_load(requests: list[TraceRequest], time_scale: float = 1.0, name: str = "trace",
               max_concurrency: int | None = None) -> TraceLoad:
    """The load point that replays ``requests`` at their timestamps (relative to the first)."""
    if not time_scale > 0:
        raise SpecError([f"time_scale must be > 0, got {time_scale!r}"])
    t0 = requests[0].timestamp_ms
    offsets = tuple(r.timestamp_ms - t0 for r in requests)
    span_s = offsets[-1] * time_scale / 1e3
    rate = (len(offsets) - 1) / span_s if span_s > 0 and len(offsets) > 1 else float(len(offsets))
    return TraceLoad(rate=rate, arrival="constant", offsets_ms=offsets, time_scale=time_scale, name=name,
                     max_concurrency=max_concurrency)


def send_errors_ms(records: Any) -> list[float]:
    """Per measured request sent: actual send time minus scheduled (recorded) time, in ms."""
    return [(r.start_ns - r.scheduled_ns) / 1e6 for r in records
            if not r.warmup and r.scheduled_ns is not None and r.start_ns]


def send_error_stats(errors_ms: Any) -> dict[str, float | None]:
    """p50, p99 and max of send-time errors (ms; ``None`` each when there is none)."""
    import numpy as np

    e = np.asarray(list(errors_ms), dtype=float)
    if not e.size:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": float(np.percentile(e, 50)), "p99": float(np.percentile(e, 99)), "max": float(e.max())}


def trace_summary(records: Any, path: Any, load: TraceLoad) -> dict[str, Any]:
    """A replay's ``trace`` summary: its settings, the requests sent, and the send-time error
    (actual minus recorded send time, ms: :func:`send_errors_ms`) as p50/p99/max."""
    errors = send_errors_ms(records)
    return {"path": str(path), "requests": len(load.offsets_ms), "sent": len(errors),
            "time_scale": load.time_scale, "span_s": load.offsets_ms[-1] * load.time_scale / 1e3,
            "send_error_ms": send_error_stats(errors)}


def replay_of(load_point: Any, seed: int) -> tuple[TraceLoad, list[Any]]:
    """A spec's ``trace`` load point (:class:`benchflow.spec.trace.TraceLoadPoint`) as the load
    generator's load and prompts (built from ``hash_ids`` with ``seed``, before any clock starts).
    Raises :class:`SpecError` when the file is (now) bad."""
    from benchflow.traces import trace_prompts
    from benchflow.workload import _WORDS

    t = load_point.trace
    requests = load_point.requests()
    load = trace_load(requests, t.time_scale, name=t.name or "trace", max_concurrency=t.max_concurrency)
    return load, trace_prompts(requests, _WORDS, seed=seed, block_size=t.block_size)
