"""Drives the engine in virtual time: no sleeps, deterministic, fast.

Used by the tests that pin the simulator's trade-offs and by anything that wants the
simulator's landscape without HTTP (for example a quick sweep of ``max-num-seqs``). Per-request
metrics follow METRICS.md (ttft, tpot, e2e) with the server's arrival as the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from benchflow.sim.config import EngineConfig
from benchflow.sim.engine import Engine
from benchflow.sim.engine import Sequence as EngineSequence
from benchflow.sim.prefix_cache import block_hashes


@dataclass(slots=True, frozen=True)
class VirtualRequest:
    """A request for the virtual driver. ``arrival_s`` is used by the open loop only."""

    prompt_tokens: int
    max_tokens: int
    arrival_s: float = 0.0
    priority: int = 0
    #: The prompt's tokens (any hashables; ``len`` should be ``prompt_tokens``): with prefix
    #: caching on, equal leading blocks are cache hits. None: never a hit.
    tokens: tuple | None = None


@dataclass(slots=True)
class RequestTiming:
    arrival_s: float
    token_times_s: list[float] = field(default_factory=list)
    priority: int = 0

    @property
    def ttft_s(self) -> float:
        return self.token_times_s[0] - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.token_times_s[-1] - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        n = len(self.token_times_s)
        return (self.token_times_s[-1] - self.token_times_s[0]) / (n - 1) if n > 1 else None


@dataclass(slots=True)
class VirtualRun:
    """The outcome of a virtual run: timings of every finished request, engine counters."""

    requests: list[RequestTiming]
    duration_s: float
    num_preemptions: int
    num_steps: int
    max_kv_cache_usage: float
    #: Prompt tokens looked up in / found in the prefix cache (0 with caching off).
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0

    @property
    def output_tokens(self) -> int:
        return sum(len(r.token_times_s) for r in self.requests)

    @property
    def output_throughput(self) -> float:
        """Output tokens per second over the whole run."""
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def request_throughput(self) -> float:
        return len(self.requests) / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, metric: str, q: float) -> float:
        """``metric`` in ttft_s, tpot_s, e2e_s; linear interpolation like numpy."""
        values = [v for r in self.requests if (v := getattr(r, metric)) is not None]
        return float(np.percentile(values, q)) if values else float("nan")

    def goodput(self, slo_s: Mapping[str, float]) -> float:
        """Requests per second meeting every SLO, e.g. ``{"ttft_s": 0.5, "tpot_s": 0.02}``."""
        good = sum(
            all((v := getattr(r, m)) is not None and v <= limit for m, limit in slo_s.items())
            for r in self.requests
        )
        return good / self.duration_s if self.duration_s > 0 else 0.0


class _Driver:
    def __init__(self, config: EngineConfig):
        self.engine = Engine(config)
        self.now = 0.0
        self.timings: dict[str, RequestTiming] = {}
        self.max_usage = 0.0
        self._ids = 0

    def submit(self, req: VirtualRequest, at_s: float) -> None:
        rid = str(self._ids)
        self._ids += 1
        self.timings[rid] = RequestTiming(arrival_s=at_s, priority=req.priority)
        cfg = self.engine.config
        hashes = block_hashes(req.tokens, cfg.block_size) if cfg.enable_prefix_caching and req.tokens else ()
        self.engine.add(EngineSequence(rid, req.prompt_tokens, req.max_tokens, priority=req.priority,
                                       block_hashes=hashes))

    def step(self) -> list[str]:
        """One step; returns the ids of the requests that finished in it."""
        self.max_usage = max(self.max_usage, self.engine.kv_cache_usage)
        result = self.engine.step()
        if result is None:
            return []
        self.max_usage = max(self.max_usage, self.engine.kv_cache_usage)
        self.now += result.duration_s
        done = []
        for out in result.outputs:
            self.timings[out.request_id].token_times_s.append(self.now)
            if out.finished:
                done.append(out.request_id)
        return done

    def result(self) -> VirtualRun:
        finished = [t for t in self.timings.values() if t.token_times_s]
        cache = self.engine.prefix_cache
        return VirtualRun(finished, self.now, self.engine.num_preemptions_total, self.engine.num_steps,
                          self.max_usage, cache.queries if cache else 0, cache.hits if cache else 0)


def run_closed_loop(
    config: EngineConfig, requests: Sequence[VirtualRequest], concurrency: int, *, max_steps: int = 1_000_000
) -> VirtualRun:
    """``concurrency`` clients, each sends its next request the moment the previous finishes."""
    driver = _Driver(config)
    queue = list(requests)[::-1]
    for _ in range(min(concurrency, len(queue))):
        driver.submit(queue.pop(), 0.0)
    steps = 0
    while driver.engine.has_work:
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"virtual run did not finish in {max_steps} steps")
        for _ in driver.step():
            if queue:
                driver.submit(queue.pop(), driver.now)
    return driver.result()


def run_open_loop(
    config: EngineConfig, requests: Sequence[VirtualRequest], *, max_steps: int = 1_000_000
) -> VirtualRun:
    """Requests arrive at their ``arrival_s``; a request arriving during a step waits for the next."""
    driver = _Driver(config)
    queue = sorted(requests, key=lambda r: r.arrival_s, reverse=True)
    steps = 0
    while queue or driver.engine.has_work:
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"virtual run did not finish in {max_steps} steps")
        if not driver.engine.has_work:
            driver.now = max(driver.now, queue[-1].arrival_s)
        while queue and queue[-1].arrival_s <= driver.now:
            req = queue.pop()
            driver.submit(req, req.arrival_s)
        driver.step()
    return driver.result()
