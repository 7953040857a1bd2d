"""The polling loop shared by the Prometheus scraper and the NVML sampler.

A sampler runs as an asyncio task beside a benchmark::

    async with sampler.running():
        run = await run_load(...)
    frame = sampler.frame()        # tidy samples (see benchflow.metrics.samples)
    gaps = sampler.gaps            # failed polls, never exceptions

It polls once at start, then every ``interval_s`` on a fixed schedule (a slow poll skips the
ticks it missed rather than bunching up), and once more at stop, so that counters such as NVML
energy bracket the measured window. A failed poll is recorded as a :class:`Gap`; the loop keeps
going. Stopping never waits longer than ``stop_timeout_s`` for a poll in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from benchflow.metrics.samples import Gap, Instant, Poll, Row, gaps_to_frame, polls_to_frame

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


class PollError(Exception):
    """Raised by a sampler's ``_poll`` for an expected failure; becomes a gap."""


class PeriodicSampler(ABC):
    """Base class: subclasses implement ``_poll`` (and optionally ``_open``/``_close``)."""

    def __init__(
        self,
        *,
        source: str,
        interval_s: float = 1.0,
        final_sample: bool = True,
        stop_timeout_s: float = 5.0,
        max_rows: int | None = 5_000_000,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.source = source
        self.interval_s = float(interval_s)
        self.final_sample = final_sample
        self.stop_timeout_s = float(stop_timeout_s)
        self.max_rows = max_rows
        self.polls: list[Poll] = []
        self.gaps: list[Gap] = []
        self._rows = 0
        self._full = False
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    # --- subclass hooks -------------------------------------------------------------------
    async def _open(self) -> None:
        """Acquire resources (HTTP session, NVML). Errors here propagate from ``start``."""

    async def _close(self) -> None:
        """Release what ``_open`` acquired. Called exactly once per successful ``_open``."""

    @abstractmethod
    async def _poll(self) -> tuple[list[Row], list[str]]:
        """One poll: its rows, and the errors of the parts that failed (may be empty).

        Raise :class:`PollError` when nothing could be read.
        """

    # --- public API -----------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Opens the sampler and starts polling in a background task."""
        if self._task is not None:
            raise RuntimeError(f"{type(self).__name__} was already started")
        await self._open()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name=f"{self.source}-sampler")
        logger.debug("%s sampler started (interval %.3fs)", self.source, self.interval_s)

    async def stop(self) -> None:
        """Stops polling (after the final sample) and releases resources. Idempotent."""
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        task = self._task
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.stop_timeout_s)
            except TimeoutError:
                logger.warning("%s sampler did not stop in %.1fs; cancelling", self.source, self.stop_timeout_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._stop = None
        try:
            await self._close()
        finally:
            logger.debug("%s sampler stopped: %d rows, %d gaps", self.source, self._rows, len(self.gaps))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PeriodicSampler]:
        """``async with sampler.running(): ...`` samples for the duration of the block."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def frame(self) -> pd.DataFrame:
        """Everything sampled so far as a tidy frame (``benchflow.metrics.samples``)."""
        return polls_to_frame(self.polls, self.source)

    def gaps_frame(self) -> pd.DataFrame:
        return gaps_to_frame(self.gaps)

    # --- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while not self._stop.is_set():
            await self._poll_once()
            next_t += self.interval_s
            delay = next_t - loop.time()
            if delay < 0:  # fell behind: skip the missed ticks
                next_t = loop.time()
                delay = 0.0
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                continue
        if self.final_sample:
            await self._poll_once()

    async def _poll_once(self) -> None:
        started = Instant.now()
        try:
            rows, errors = await self._poll()
        except asyncio.CancelledError:
            raise
        except PollError as e:
            self._gap(started, str(e))
            return
        except Exception as e:  # a sampler must never take the benchmark down
            logger.warning("%s sampler: unexpected poll failure", self.source, exc_info=True)
            self._gap(started, f"unexpected {type(e).__name__}: {e}")
            return
        # A sample is stamped at the middle of its poll (a scrape or a round of NVML calls).
        when = Instant.between(started, time.perf_counter_ns())
        for err in errors:
            self._gap(when, err)
        if rows:
            self._keep(Poll(when, rows))

    def _keep(self, poll: Poll) -> None:
        if self.max_rows is not None and self._rows + len(poll.rows) > self.max_rows:
            if not self._full:
                self._full = True
                self._gap(poll.when, f"sample buffer full ({self.max_rows} rows); later samples dropped")
            return
        self._rows += len(poll.rows)
        self.polls.append(poll)

    def _gap(self, when: Instant, error: str) -> None:
        if not self.gaps:
            logger.warning("%s sampler: poll failed: %s", self.source, error)
        else:
            logger.debug("%s sampler: poll failed: %s", self.source, error)
        self.gaps.append(Gap(when.t_ns, when.at, self.source, error))
