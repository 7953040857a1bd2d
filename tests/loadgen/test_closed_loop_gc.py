"""A closed loop runs without full garbage collections: one stalls the event loop (about 0.1 s in a
loaded process, longer as a long run's records pile up) and lands on some request's send or first
token, as client-added latency. The young generations are still collected, and the collector's
settings come back when the load ends."""

from __future__ import annotations

import asyncio
import gc
from time import perf_counter_ns

from benchflow.loadgen import run_load
from benchflow.records import Prompt
from benchflow.spec import ConcurrencyLoad
from tests.support.lean_server import serve_lean_in_process
from tests.support.stream_server import StreamServerConfig


def test_a_closed_loop_runs_without_full_collections_and_restores_the_collector():
    prompts = [Prompt(text=f"gc-{k} hello world", input_tokens=3, max_tokens=8) for k in range(50)]
    collections: list[tuple[int, int]] = []  # (generation, when)

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append((info["generation"], perf_counter_ns()))

    before = gc.get_threshold()
    # a full collection every few hundred allocations, unless held off: CPython skips one while fewer
    # objects than a quarter of those a full collection last kept wait for it, so that count is made ~0
    gc.freeze()
    gc.collect()
    gc.set_threshold(100, 1, 1)
    gc.callbacks.append(seen)
    try:
        with serve_lean_in_process(StreamServerConfig(ttft_s=0.0, gap_s=0.0)) as url:
            run = asyncio.run(run_load(url, "lean", prompts, ConcurrencyLoad(concurrency=8), warmup_requests=8,
                                       max_requests=400, request_timeout_s=30.0))
        after = gc.get_threshold()
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*before)
        gc.unfreeze()
    assert len(run.records) == 408 and all(r.error_class is None for r in run.records)
    start = min(r.start_ns for r in run.records)
    end = max(r.end_ns for r in run.records)
    during = [g for g, t in collections if start <= t <= end]
    assert during, "the young generations are still collected"
    assert 2 not in during, f"{during.count(2)} full collections while requests were in flight"
    assert after == (100, 1, 1)
    assert gc.isenabled()
