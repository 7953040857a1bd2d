"""Client queue time: in open loop with ``max_concurrency`` a due request waits for a free slot.
The wait is recorded per request (``queued_ns``) and TTFT and e2e are reported with and without it
(vLLM's coordinated-omission fix); the wait is not client lag."""

from __future__ import annotations

import dataclasses
import io

import pandas as pd
import pytest

from benchflow import stats
from benchflow.loadgen import run_load
from benchflow.records import Prompt, frame_to_records, records_to_frame
from benchflow.spec import ConcurrencyLoad, RateLoad
from benchflow.stats.summary import client_queue_ns
from tests.stats.helpers import MS, ok, run_of
from tests.support.stream_server import StreamServer, StreamServerConfig

pytestmark = pytest.mark.integration


def _prompts(n: int = 4, max_tokens: int = 5) -> list[Prompt]:
    return [Prompt(text="w w w", input_tokens=3, max_tokens=max_tokens) for _ in range(n)]


def _queued(rec, queued_ms: float):
    return dataclasses.replace(rec, queued_ns=int(queued_ms * MS))


def test_summary_reports_latencies_with_and_without_the_client_queue():
    # due at 0 and 10 ms; the second waited 40 ms for a slot (sent at 50 ms)
    a = _queued(ok(0, 0.5, [20.5, 30.5], tokens=2, scheduled_ms=0.0), 0.2)
    b = _queued(ok(1, 50.0, [70.0, 80.0], tokens=2, scheduled_ms=10.0), 10.0)
    s = stats.summarize(run_of([a, b], mode="open", concurrency=1, target_rate=100.0))
    assert s["client_queue_time_ms"]["count"] == 2
    assert s["client_queue_time_ms"]["max"] == pytest.approx(40.0)
    assert s["client_queue_time_ms"]["min"] == pytest.approx(0.3)
    assert s["ttft_ms"]["max"] == pytest.approx(20.0)  # from the actual send
    assert s["ttft_including_client_queue_ms"]["max"] == pytest.approx(60.0)  # from when it was due
    assert s["e2e_including_client_queue_ms"]["max"] == pytest.approx(70.0)
    assert s["e2e_ms"]["max"] == pytest.approx(30.0)
    # client lag is how late the client itself was in handing the request on, not the slot wait
    assert s["client_lag_ms"]["max"] == pytest.approx(0.2)
    assert stats.is_metric_key("ttft_including_client_queue_ms.p99")
    assert stats.is_metric_key("client_queue_time_ms.p50")


def test_closed_loop_has_no_client_queue():
    s = stats.summarize(run_of([ok(0, 0.0, [10.0, 20.0], tokens=2), ok(1, 5.0, [25.0], tokens=1)]))
    assert s["client_queue_time_ms"]["count"] == 0 and s["client_queue_time_ms"]["p99"] is None
    assert s["ttft_including_client_queue_ms"] == s["ttft_ms"]
    assert s["e2e_including_client_queue_ms"] == s["e2e_ms"]


def test_queued_ns_round_trips_through_parquet_and_old_files_read_without_it():
    rec = _queued(ok(0, 5.0, [10.0], tokens=1, scheduled_ms=1.0), 2.0)
    buf = io.BytesIO()
    records_to_frame([rec]).to_parquet(buf, index=False)
    df = pd.read_parquet(io.BytesIO(buf.getvalue()))
    assert "queued_ns" in df.columns
    assert frame_to_records(df)[0].queued_ns == 2 * MS
    old = frame_to_records(df.drop(columns=["queued_ns"]))[0]
    assert old.queued_ns is None and client_queue_ns(old) is None


async def test_capped_open_loop_records_the_wait_for_a_slot():
    async with StreamServer(StreamServerConfig(ttft_s=0.05, gap_s=0.01, default_max_tokens=5)) as url:
        run = await run_load(url, "m", _prompts(), RateLoad(rate=200, arrival="constant", max_concurrency=2),
                             max_requests=8, warmup_requests=1)
    recs = sorted(run.records, key=lambda r: r.request_id)
    warm, measured = recs[0], recs[1:]
    assert warm.queued_ns is None and warm.scheduled_ns is None
    assert all(r.succeeded for r in measured)
    assert all(r.scheduled_ns <= r.queued_ns <= r.start_ns for r in measured)
    waits_ms = [(r.start_ns - r.queued_ns) / 1e6 for r in measured]
    # each request takes ~90 ms and they were due every 5 ms: all but the first two waited for a slot
    assert min(waits_ms[2:]) > 50
    s = stats.summarize(run)
    assert s["client_queue_time_ms"]["count"] == 8
    assert s["client_queue_time_ms"]["max"] == pytest.approx(max(waits_ms))
    assert s["ttft_including_client_queue_ms"]["p50"] > s["ttft_ms"]["p50"] + 50
    assert s["e2e_including_client_queue_ms"]["max"] >= s["e2e_ms"]["max"]
    # the wait is not lag: lag stays far below it
    assert s["client_lag_ms"]["max"] < s["client_queue_time_ms"]["max"]


async def test_uncapped_open_loop_queues_for_no_time_and_closed_loop_not_at_all():
    async with StreamServer(StreamServerConfig(ttft_s=0.005, gap_s=0.001)) as url:
        run = await run_load(url, "m", _prompts(), RateLoad(rate=100, arrival="constant"), max_requests=4)
        closed = await run_load(url, "m", _prompts(), ConcurrencyLoad(concurrency=2), max_requests=4)
    assert all(r.queued_ns is not None and r.start_ns >= r.queued_ns for r in run.records)
    assert all(r.queued_ns is None for r in closed.records)
