"""The watch over one load-generator run: the duration bound, the stall watchdog, the
over-saturation detector (:mod:`benchflow.saturation`, open loop) and the caller's
``should_stop``, checked every :data:`POLL_S` while the load runs. When one of them fires, the
load is cancelled (which marks the requests in flight incomplete). A stall is checked before
saturation: a server that stopped serving is dead, not merely overloaded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

logger = logging.getLogger(__name__)

#: How often the duration bound, the stall watchdog and ``should_stop`` are checked.
POLL_S = 0.25


class LoadWatch:
    """Runs the load until it ends, the duration bound passes, the server stalls or the caller
    asks to stop; then cancels it (which marks the requests in flight incomplete)."""

    def __init__(self, client: Any, max_duration_s: float | None, stall_after_s: float | None,
                 should_stop: Callable[[], str | None] | None, saturation: Any = None) -> None:
        self.client = client
        #: A :class:`~benchflow.saturation.SaturationDetector`, fed the client's samples.
        self.saturation = saturation
        self.max_duration_s = max_duration_s
        self.stall_after_s = stall_after_s
        self.should_stop = should_stop
        self.stopper: asyncio.Future | None = None
        self.detail: dict[str, Any] = {}

    async def run(self, main: Any) -> str:
        """Returns "done", "max_duration", "stalled", "saturated" or "cancelled"."""
        task = asyncio.ensure_future(main)
        try:
            reason = await self._watch(task)
        except asyncio.CancelledError:
            self._drop_stopper()
            task.cancel()
            await asyncio.wait({task})
            raise
        self._drop_stopper()
        if reason == "done":
            task.result()
            return reason
        task.cancel()
        await asyncio.wait({task})
        return reason

    def _drop_stopper(self) -> None:
        if self.stopper is not None:
            self.stopper.cancel()  # its thread ends on its own; its answer is no longer wanted
            self.stopper = None

    async def _watch(self, task: asyncio.Future) -> str:
        loop = asyncio.get_running_loop()
        deadline = None if self.max_duration_s is None else loop.time() + self.max_duration_s
        polling = self.stall_after_s is not None or self.should_stop is not None or self.saturation is not None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            if polling:
                timeout = POLL_S if timeout is None else min(timeout, POLL_S)
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if done:
                return "done"
            if deadline is not None and loop.time() >= deadline:
                return "max_duration"
            if self.stall_after_s is not None:
                evidence = self.client.stall(perf_counter_ns(), self.stall_after_s)
                if evidence is not None:
                    self.detail = evidence
                    return "stalled"
            if self.saturation is not None:
                sample = self.client.saturation_sample(perf_counter_ns())
                verdict = None if sample is None else self.saturation.observe(sample)
                if verdict is not None:
                    self.detail = verdict
                    return "saturated"
            if self.should_stop is not None:
                if self.stopper is None:  # a slow callable (an API call) never blocks the load's loop
                    self.stopper = asyncio.ensure_future(asyncio.to_thread(self.should_stop))
                elif self.stopper.done():
                    stopper, self.stopper = self.stopper, None
                    error = stopper.exception()
                    reason = None if error else stopper.result()
                    if error:
                        logger.warning("should_stop raised %s: %s; the load goes on", type(error).__name__, error)
                    if reason:
                        self.detail = {"reason": str(reason)}
                        return "cancelled"
