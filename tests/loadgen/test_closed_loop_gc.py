"""A closed loop (and the agents of an agentic workload) runs without full garbage collections: one
stalls the event loop (about 0.1 s in a loaded process, longer as a long run's records pile up) and
lands on some request's send or first token, as client-added latency. The young generations are still
collected, and the collector's settings come back when the load ends."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from time import perf_counter_ns

from benchflow.agentic import AgenticSpec, run_agents
from benchflow.loadgen import run_load
from benchflow.records import Prompt
from benchflow.spec import ConcurrencyLoad
from tests.support.lean_server import serve_lean_in_process
from tests.support.stream_server import StreamServerConfig


@contextlib.contextmanager
def _collections_seen() -> Iterator[list[tuple[int, int]]]:
    """The collections that start, ``(generation, perf_counter_ns)``, with the collector set to collect the
    oldest generation every few hundred allocations unless held off. CPython skips a full collection while
    fewer objects than a quarter of those the last one kept wait for it, so that count is made ~0 first."""
    seen: list[tuple[int, int]] = []

    def on(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append((info["generation"], perf_counter_ns()))

    before = gc.get_threshold()
    gc.freeze()
    gc.collect()
    gc.set_threshold(100, 1, 1)
    gc.callbacks.append(on)
    try:
        yield seen
        assert gc.get_threshold() == (100, 1, 1), "the collector's settings are restored when the load ends"
    finally:
        gc.callbacks.remove(on)
        gc.set_threshold(*before)
        gc.unfreeze()


def _during(seen: list[tuple[int, int]], records: list) -> list[int]:
    start = min(r.start_ns for r in records)
    end = max(r.end_ns for r in records)
    return [g for g, t in seen if start <= t <= end]


def test_a_closed_loop_runs_without_full_collections_and_restores_the_collector():
    prompts = [Prompt(text=f"gc-{k} hello world", input_tokens=3, max_tokens=8) for k in range(50)]
    with _collections_seen() as seen, serve_lean_in_process(StreamServerConfig(ttft_s=0.0, gap_s=0.0)) as url:
        run = asyncio.run(run_load(url, "lean", prompts, ConcurrencyLoad(concurrency=8), warmup_requests=8,
                                   max_requests=400, request_timeout_s=30.0))
    assert len(run.records) == 408 and all(r.error_class is None for r in run.records)
    during = _during(seen, run.records)
    assert during, "the young generations are still collected"
    assert 2 not in during, f"{during.count(2)} full collections while requests were in flight"
    assert gc.isenabled()


def test_agents_run_without_full_collections():
    prompts = [Prompt(text=f"agent-{k} hello world", input_tokens=3, max_tokens=8) for k in range(20)]
    spec = AgenticSpec(turns="D(5)", think_time="0s", turn_tokens=8, tasks=60)
    with _collections_seen() as seen, serve_lean_in_process(StreamServerConfig(ttft_s=0.0, gap_s=0.0)) as url:
        run = asyncio.run(run_agents(url, "lean", prompts, 6, spec, api="chat", request_timeout_s=30.0))
    assert len(run.records) == 300 and all(r.error_class is None for r in run.records)
    during = _during(seen, run.records)
    assert during, "the young generations are still collected"
    assert 2 not in during, f"{during.count(2)} full collections while the agents ran"
