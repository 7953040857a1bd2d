"""Builders for hand-made request traces (times in milliseconds, converted to ns)."""

from __future__ import annotations

from datetime import datetime, timezone

from benchflow.records import LoadRun, RequestRecord

MS = 1_000_000


def ok(rid: int, start_ms: float, chunk_ms: list[float], *, tokens: int | None = None,
       chunk_tokens: list[int | None] | None = None, input_tokens: int | None = 10,
       end_ms: float | None = None, warmup: bool = False, scheduled_ms: float | None = None) -> RequestRecord:
    """A successful request: output messages at ``chunk_ms`` (absolute), usage ``tokens``."""
    counts = chunk_tokens if chunk_tokens is not None else [None] * len(chunk_ms)
    last = chunk_ms[-1] if chunk_ms else start_ms
    return RequestRecord(
        request_id=rid, warmup=warmup, start_ns=int(start_ms * MS),
        scheduled_ns=None if scheduled_ms is None else int(scheduled_ms * MS),
        end_ns=int((end_ms if end_ms is not None else last + 1) * MS),
        chunks=[(int(t * MS), n) for t, n in zip(chunk_ms, counts)],
        status=200, input_tokens=input_tokens, completion_tokens=tokens,
    )


def failed(rid: int, start_ms: float, end_ms: float, error_class: str = "http_5xx", status: int | None = 500,
           warmup: bool = False, scheduled_ms: float | None = None) -> RequestRecord:
    return RequestRecord(
        request_id=rid, warmup=warmup, start_ns=int(start_ms * MS), end_ns=int(end_ms * MS),
        scheduled_ns=None if scheduled_ms is None else int(scheduled_ms * MS),
        status=status, error_class=error_class, error_message="boom", input_tokens=10,
    )


def incomplete(rid: int, start_ms: float, chunk_ms: list[float]) -> RequestRecord:
    return RequestRecord(
        request_id=rid, warmup=False, start_ns=int(start_ms * MS), end_ns=None,
        chunks=[(int(t * MS), None) for t in chunk_ms], status=200, input_tokens=10, incomplete=True,
    )


def run_of(records: list[RequestRecord], *, mode: str = "closed", concurrency: int | None = 4,
           target_rate: float | None = None) -> LoadRun:
    return LoadRun(records=records, anchor_ns=0, anchor_at=datetime(2024, 1, 1, tzinfo=timezone.utc),
                   mode=mode, concurrency=concurrency, target_rate=target_rate, stop_reason="max_requests")
