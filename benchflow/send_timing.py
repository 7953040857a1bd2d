"""Precise open-loop send times (:func:`benchflow.loadgen._open_loop`): what is done before a
schedule's clock starts and how each send waits for its time. Definitions: docs/metrics.md,
"Trace replay: send-time error"; measured by ``bench/traces.py``.

- :data:`WARM_CONNECTIONS`: keep-alive connections opened before the clock starts;
- :class:`_QuietGc`: no automatic garbage collection (and a short thread switch interval) while
  the schedule runs; in a closed loop, no full collection;
- :func:`_until`: sleep until shortly before a send is due, then yield to the event loop until it is.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from time import perf_counter_ns

__all__ = ["SPIN_NS", "GC_SLACK_NS", "GC_FORCE_COUNT", "SWITCH_INTERVAL_S", "WARM_CONNECTIONS"]

#: An open-loop send sleeps until this long before it is due (at most a quarter of the gap since
#: the previous send), then yields to the event loop (``asyncio.sleep(0)``) until it is: asyncio's
#: timers wake up to ~1 ms late (epoll's timeout is in whole milliseconds), and the other requests'
#: responses are handled while it waits. Longer windows cost CPU at high rates, which a loaded
#: machine pays for in scheduling delay (bench/traces.py: 1.5 ms made p99 worse at 500 req/s).
SPIN_NS = 1_000_000
#: With automatic garbage collection off during an open loop (:class:`_QuietGc`), the young
#: generations are collected when the next send is at least this far away ...
GC_SLACK_NS = 10_000_000
#: ... or, on a schedule with no such gap, when this many allocations are pending anyway.
GC_FORCE_COUNT = 20_000


#: The interpreter's thread switch interval during an open loop (the default is 5 ms: a sampler
#: thread parsing ``/metrics`` could hold the event loop's thread off a send that long).
SWITCH_INTERVAL_S = 0.0005


#: The oldest generation's threshold while a closed loop runs (:class:`_QuietGc` with ``young=True``):
#: high enough that no full collection starts before the loop ends.
_NO_FULL_COLLECTION = 1 << 30


class _QuietGc:
    """Keeps the garbage collector's pauses out of a load's measurements: before the loop starts,
    everything alive is frozen (never scanned again). A full collection of a loaded process takes
    ~0.1 s, and the records of a long run make each one longer: it would otherwise land on some
    request's send or first token. Undone when the loop ends (nested uses leave it to the outermost).

    - open loop (the default): garbage is collected before the clock starts, then automatic
      collection is turned off; :meth:`idle` collects the young generations in the gaps of the
      schedule, and other threads get the GIL back sooner (:data:`SWITCH_INTERVAL_S`);
    - closed loop (``young=True``): there are no gaps, so the young generations are still collected
      automatically (short pauses, as many as before), but no full collection starts until the end.
    """

    depth = 0

    def __init__(self, young: bool = False) -> None:
        self.young = young

    def __enter__(self) -> _QuietGc:
        cls = type(self)
        cls.depth += 1
        if cls.depth == 1:
            self.was_enabled = gc.isenabled()
            self.switch_interval = sys.getswitchinterval()
            self.thresholds = gc.get_threshold()
            if self.young:
                # no collection first: it would stall the loop (~0.1 s) with the load's monitor running;
                # what garbage is frozen with the rest is collectable again at the end
                gc.freeze()
                gc.set_threshold(self.thresholds[0], self.thresholds[1], _NO_FULL_COLLECTION)
            else:
                gc.collect()
                gc.freeze()
                sys.setswitchinterval(min(self.switch_interval, SWITCH_INTERVAL_S))
                gc.disable()
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self)
        cls.depth -= 1
        if cls.depth == 0:
            gc.unfreeze()
            gc.set_threshold(*self.thresholds)
            sys.setswitchinterval(self.switch_interval)
            if self.was_enabled:
                gc.enable()

    @staticmethod
    def idle(slack_ns: int) -> None:
        pending = gc.get_count()[0]
        if pending > gc.get_threshold()[0] and (slack_ns >= GC_SLACK_NS or pending >= GC_FORCE_COUNT):
            gc.collect(1)


#: Open loop: keep-alive connections opened (``GET /v1/models``, :meth:`benchflow.http_stream.Pool.warm`)
#: before the clock starts, at most, so that the first sends of a schedule do not each pay for a new
#: connection.
WARM_CONNECTIONS = 32


async def _until(due_ns: int, quiet: _QuietGc, gap_ns: int | None = None) -> None:
    """Returns at ``due_ns`` (or at once when it has passed): sleeps until the spin window before it
    (:data:`SPIN_NS`, at most ``gap_ns // 4``: a quarter of the gap since the previous send),
    collecting garbage first when there is time, then yields to the loop until it is due."""
    spin_ns = SPIN_NS if gap_ns is None else min(SPIN_NS, gap_ns // 4)
    delay_ns = due_ns - perf_counter_ns()
    if delay_ns > spin_ns:
        quiet.idle(delay_ns)
        delay_ns = due_ns - perf_counter_ns()
        if delay_ns > spin_ns:
            await asyncio.sleep((delay_ns - spin_ns) / 1e9)
    while perf_counter_ns() < due_ns:
        await asyncio.sleep(0)
