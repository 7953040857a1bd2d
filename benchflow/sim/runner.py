"""The real-time step loop: one asyncio task advances the engine and wakes per-request queues.

Each step's tokens are released when the step's simulated duration has passed. The loop keeps
an absolute timeline (a step starts when the previous one ended), so timer overshoot does not
accumulate; when it falls behind real time by more than ``LAG_WARN_S`` it re-synchronises and
logs a warning saying by how much (at most once per ``LAG_LOG_INTERVAL_S``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from benchflow.sim.engine import Engine, StepResult, TokenOutput
from benchflow.sim.engine import Sequence as EngineSequence
from benchflow.sim.metrics import SimMetrics

logger = logging.getLogger(__name__)

LAG_WARN_S = 0.05
LAG_LOG_INTERVAL_S = 5.0


@dataclass(slots=True, eq=False)
class RequestStream:
    """What a handler waits on: the engine's tokens for one request, plus server-side times."""

    request_id: str
    prompt_tokens: int
    arrival_s: float
    queue: asyncio.Queue[TokenOutput] = field(default_factory=asyncio.Queue)
    first_token_s: float | None = None
    last_token_s: float | None = None
    num_tokens: int = 0


class StepLoop:
    """Drives ``engine`` in real time and records vLLM-style metrics."""

    def __init__(self, engine: Engine, metrics: SimMetrics):
        self.engine = engine
        self.metrics = metrics
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._halted = False
        self._lag_max_s = 0.0
        self._lag_events = 0
        self._lag_logged_at = 0.0

    # --- requests ------------------------------------------------------------------------
    def submit(self, request_id: str, prompt_tokens: int, max_tokens: int, priority: int = 0,
               block_hashes: tuple[int, ...] = ()) -> RequestStream:
        """Queues a request in the engine; its tokens will arrive on the returned stream's queue."""
        stream = RequestStream(request_id, prompt_tokens, time.perf_counter())
        self.engine.add(EngineSequence(request_id, prompt_tokens, max_tokens, priority=priority,
                                       block_hashes=block_hashes))
        self._streams[request_id] = stream
        self._wake.set()
        return stream

    def abort(self, request_id: str) -> None:
        """Forgets a request whose client went away (frees its KV if it is still in the engine)."""
        if self._streams.pop(request_id, None) is not None and self.engine.abort(request_id):
            logger.debug("aborted %s", request_id)

    def halt(self) -> None:
        """Stops stepping for good (the stall fault): every stream hangs."""
        self._halted = True

    @property
    def halted(self) -> bool:
        return self._halted

    # --- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Runs until cancelled."""
        t_end: float | None = None
        while True:
            if self._halted or not self.engine.has_work:
                self._wake.clear()
                await self._wake.wait()
                t_end = None
                continue
            result = self.engine.step()
            if result is None:
                continue
            if result.num_preemptions:
                self.metrics.num_preemptions.inc(result.num_preemptions)
            if result.prefix_cache_queries:
                self.metrics.prefix_cache_queries.inc(result.prefix_cache_queries)
                self.metrics.prefix_cache_hits.inc(result.prefix_cache_hits)
            now = time.perf_counter()
            t_end = (now if t_end is None else t_end) + result.duration_s
            delay = t_end - now
            await asyncio.sleep(delay if delay > 0 else 0)
            late = time.perf_counter() - t_end
            if late > LAG_WARN_S:
                self._note_lag(late)
                t_end = time.perf_counter()
            if not self._halted:
                self._dispatch(result)

    def _note_lag(self, late_s: float) -> None:
        self._lag_max_s = max(self._lag_max_s, late_s)
        self._lag_events += 1
        now = time.monotonic()
        if now - self._lag_logged_at >= LAG_LOG_INTERVAL_S:
            logger.warning(
                "simulator fell behind real time by up to %.1f ms (%d times since the last warning); "
                "timings are stretched, the machine may be overloaded",
                self._lag_max_s * 1e3, self._lag_events,
            )
            self._lag_logged_at = now
            self._lag_max_s = 0.0
            self._lag_events = 0

    def _dispatch(self, result: StepResult) -> None:
        now = time.perf_counter()
        m = self.metrics
        for out in result.outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            if stream.first_token_s is None:
                stream.first_token_s = now
                m.ttft.observe(now - stream.arrival_s)
                m.prompt_tokens.inc(stream.prompt_tokens)
            else:
                m.itl.observe(now - stream.last_token_s)
            stream.last_token_s = now
            stream.num_tokens += 1
            m.generation_tokens.inc()
            if out.finished:
                self._finish(stream, now)
            stream.queue.put_nowait(out)

    def _finish(self, stream: RequestStream, now: float) -> None:
        del self._streams[stream.request_id]
        self.metrics.e2e.observe(now - stream.arrival_s)
        if stream.num_tokens > 1:
            self.metrics.tpot.observe((now - stream.first_token_s) / (stream.num_tokens - 1))
        self.metrics.request_finished("length")
