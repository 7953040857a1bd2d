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
