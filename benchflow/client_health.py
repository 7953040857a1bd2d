"""The load generator's own health and clock: is the client the bottleneck, and one clock for
several client processes (used by :mod:`benchflow.clients`; docs/metrics.md has the rules).

- :func:`measure_offset`: this process's ``perf_counter_ns`` offset to the system-wide
  ``CLOCK_MONOTONIC``, from the tightest of 64 back-to-back ``monotonic, perf_counter, monotonic``
  triples (offset = midpoint − perf_counter, uncertainty = half the width + 1 ns).
- :class:`LoopMonitor`: a task that records how late its event loop wakes (lag) and the CPU share
  of the loop's thread (and of the whole process, via psutil).
- :func:`judge`: ``client_bound`` (a flag with evidence and a suggested ``clients: N``, never a
  failure) when a client used :data:`CPU_BOUND_SHARE` of a core or its loop lag p90 reached
  :data:`LAG_BOUND_P90_MS`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic_ns, perf_counter_ns
from typing import Any

__all__ = ["ClockOffset", "measure_offset", "LoopMonitor", "judge", "MONITOR_INTERVAL_S", "CPU_BOUND_SHARE",
           "LAG_BOUND_P90_MS"]

#: The loop-lag monitor's period.
MONITOR_INTERVAL_S = 0.01
#: A client that used this share of one core (its event loop's thread; a whole child process) is saturated.
CPU_BOUND_SHARE = 0.90
#: A client whose event loop woke this late (p90 of the monitor's wake-ups) could not keep up. On a
#: 2-core machine at load average 8 an idle client's p90 is about 20 ms, hence the margin.
LAG_BOUND_P90_MS = 50.0

# ---- one clock -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClockOffset:
    """``monotonic_ns() - perf_counter_ns()`` in one process, and the uncertainty of that figure."""

    offset_ns: int
    uncertainty_ns: int


def measure_offset(samples: int = 64) -> ClockOffset:
    """This process's ``perf_counter_ns`` offset to the system-wide ``CLOCK_MONOTONIC``."""
    best = None
    for _ in range(samples):
        m1 = monotonic_ns()
        p = perf_counter_ns()
        m2 = monotonic_ns()
        if best is None or m2 - m1 < best[2] - best[0]:
            best = (m1, p, m2)
    m1, p, m2 = best
    return ClockOffset((m1 + m2) // 2 - p, (m2 - m1 + 1) // 2 + 1)


# ---- the client's own health ---------------------------------------------------------------------

def _pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return (s[lo] + (s[hi] - s[lo]) * (k - lo)) / 1e6


class LoopMonitor:
    """A task that measures its own event loop's lag every ``interval_s``, and the CPU share of
    the loop's thread (and, with ``process_cpu``, of the whole process, via psutil)."""

    def __init__(self, interval_s: float = MONITOR_INTERVAL_S, on_tick: Callable[[], None] | None = None,
                 process_cpu: bool = False) -> None:
        self.interval_s = interval_s
        self.on_tick = on_tick
        self.process_cpu = process_cpu
        self.lags_ns: list[int] = []
        self._task: asyncio.Task | None = None
        self._t0 = self._t1 = self._cpu0 = self._cpu1 = 0
        self._proc0 = self._proc1 = 0.0

    def _proc_cpu_s(self) -> float:
        import psutil

        t = psutil.Process().cpu_times()
        return t.user + t.system

    def start(self) -> None:
        self._t0, self._cpu0 = perf_counter_ns(), time.thread_time_ns()
        if self.process_cpu:
            self._proc0 = self._proc_cpu_s()
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        self._t1, self._cpu1 = perf_counter_ns(), time.thread_time_ns()
        if self.process_cpu:
            self._proc1 = self._proc_cpu_s()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        period = int(self.interval_s * 1e9)
        while True:
            t = perf_counter_ns()
            await asyncio.sleep(self.interval_s)
            self.lags_ns.append(max(0, perf_counter_ns() - t - period))
            if self.on_tick is not None:
                self.on_tick()

    def evidence(self) -> dict[str, Any]:
        """Lag percentiles (ms) and CPU shares of one core over the monitored time."""
        wall = max(1, self._t1 - self._t0)
        out: dict[str, Any] = {
            "pid": os.getpid(), "seconds": round(wall / 1e9, 3),
            "cpu_share": round((self._cpu1 - self._cpu0) / wall, 3),
            "loop_lag_ms": {"p50": _pct(self.lags_ns, 0.5), "p90": _pct(self.lags_ns, 0.9),
                            "p99": _pct(self.lags_ns, 0.99), "max": _pct(self.lags_ns, 1.0),
                            "samples": len(self.lags_ns)},
        }
        if self.process_cpu:
            out["process_cpu_share"] = round((self._proc1 - self._proc0) * 1e9 / wall, 3)
        return out


def judge(processes: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """``{"client_bound": bool, "client": {...}}`` for a cell's summary, from each load process's
    :meth:`LoopMonitor.evidence` (``index`` added)."""
    reasons = []
    for p in processes:
        share = max(p.get("cpu_share") or 0.0, p.get("process_cpu_share") or 0.0)
        if share >= CPU_BOUND_SHARE:
            reasons.append(f"client {p.get('index', 0)} used {share:.0%} of a core")
        lag = (p.get("loop_lag_ms") or {}).get("p90")
        if lag is not None and lag >= LAG_BOUND_P90_MS:
            reasons.append(f"client {p.get('index', 0)} event-loop lag p90 {lag:.1f} ms "
                           f"(>= {LAG_BOUND_P90_MS:g} ms)")
    client: dict[str, Any] = {"clients": clients, "processes": processes, "evidence": reasons, "suggestion": None}
    if reasons:
        cores = os.cpu_count() or 1
        more = clients * 2
        client["suggestion"] = (
            f"the load generator was the bottleneck: set workload 'clients: {more}' (benchflow bench --clients {more})"
            + (f"; this machine has {cores} cores, so run the client on a bigger one" if more > cores else ""))
    return {"client_bound": bool(reasons), "client": client}
