"""One cell's load over several client processes, and the client's own health (is it the bottleneck?).

``workload.clients: N`` (``benchflow bench --clients N``) splits one cell over N processes
(multiprocessing, ``spawn``), each with its own event loop, connection pool and core:

- closed loop: process ``i`` runs its share of the concurrency (``c // N``, the first ``c % N``
  one more); the request ids come from one counter in shared memory, so the N processes together
  send exactly the requests one process would (a faster process simply takes more of them);
- open loop: the schedule is computed ONCE here (:mod:`benchflow.schedule`) and dealt out
  round-robin: process ``i`` sends requests ``i, i+N, i+2N, ...`` at their offsets from one common
  start time, so the merged arrival process is the single-process one. ``max_concurrency`` is
  split like a concurrency;
- warm-up: each process runs its share of the warm-up workers; the measured phase starts in all
  processes at one common instant, after the last warm-up request of every process has ended.

Every process's ``perf_counter_ns`` is moved onto the parent's through each one's measured offset to
``CLOCK_MONOTONIC``, with a bound on the error; a loop-lag and CPU monitor in every load process marks
a cell ``client_bound`` when the client was the bottleneck (:mod:`benchflow.client_health`, and
docs/metrics.md, "Several client processes").

Children never outlive the cell: they get ``PR_SET_PDEATHSIG`` (SIGKILL when the parent's thread
that started them dies), ignore SIGINT (the parent stops them), and are stopped, then terminated,
then killed when the cell ends, is cancelled or times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic_ns, perf_counter_ns
from typing import Any

from benchflow.client_health import ClockOffset, LoopMonitor, judge, measure_offset
from benchflow.errors import BenchflowError
from benchflow.records import LoadRun, Prompt, RequestRecord

__all__ = ["run_cell_load", "run_clients", "LoopMonitor", "ClockOffset", "measure_offset", "judge",
           "ClientProcessError", "TIMESTAMP_FIELDS"]

logger = logging.getLogger(__name__)

#: How long the child processes may take to start (imports on a busy machine).
START_TIMEOUT_S = 120.0
#: How long stopped children may take to send their records.
COLLECT_TIMEOUT_S = 60.0
#: The measured phase starts this long after the last process is ready (so all start together).
START_MARGIN_NS = 50_000_000
#: ``RequestRecord`` fields that are timestamps (moved onto the parent's clock; chunks too).
TIMESTAMP_FIELDS = ("start_ns", "scheduled_ns", "queued_ns", "end_ns")
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.005


class ClientProcessError(BenchflowError):
    """A client process failed to start or crashed (a benchflow bug or a starved machine, not the server)."""


# ---- entry point ---------------------------------------------------------------------------------

async def run_cell_load(base_url: str, model: str, prompts: Sequence[Prompt], load: Any, *, clients: int = 1,
                        setup: Callable[[int], None] | None = None, **kwargs: Any) -> tuple[LoadRun, dict[str, Any]]:
    """``loadgen.run_load`` over ``clients`` processes (in this process when 1), with the client's
    health: ``(run, {"client_bound": ..., "client": {...}})``. ``setup(i)`` runs first in each child
    process (picklable; tests use it to starve a client)."""
    if clients > 1:
        return await run_clients(base_url, model, prompts, load, clients=clients, setup=setup, **kwargs)
    from benchflow.loadgen import run_load

    monitor = LoopMonitor()
    monitor.start()
    try:
        run = await run_load(base_url, model, prompts, load, **kwargs)
    finally:
        monitor.stop()
    verdict = judge([{"index": 0, **monitor.evidence()}], 1)
    _warn(verdict)
    return run, verdict


def _warn(verdict: dict[str, Any]) -> None:
    if verdict["client_bound"]:
        c = verdict["client"]
        logger.warning("client-bound cell: %s; %s", "; ".join(c["evidence"]), c["suggestion"])


def _share(total: int, n: int, i: int) -> int:
    return total // n + (1 if i < total % n else 0)


@dataclass
class _Plan:
    """What every child needs (pickled once per child)."""

    url: str
    bodies: list[bytes]
    input_tokens: list[int]
    max_tokens: list[int | None]
    warmup: int
    total: int | None
    request_timeout_s: float
    warm_workers: list[int]
    workers: list[int]  # closed loop: concurrency share; open loop: max_concurrency share (0: none)
    open_ids: list[list[int]] | None = None
    open_offsets: list[list[int]] | None = None
    parent_pid: int = 0
    setup: Callable[[int], None] | None = None


@dataclass
class _Ipc:
    queue: Any
    go: Any
    stop: Any
    warm_counter: Any
    counter: Any
    ready: Any  # monotonic_ns when each child finished its warm-up (0: not yet)
    beats: Any  # per child: in_flight, busy_since, last_token, last_answer (monotonic ns; 0 = none)
    ended: Any  # per child: requests ended, of which failed (for a progress display)

    @classmethod
    def make(cls, ctx: Any, n: int, warmup: int) -> _Ipc:
        return cls(ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Value("q", 0), ctx.Value("q", warmup),
                   ctx.Array("q", n, lock=False), ctx.Array("q", 4 * n, lock=False), ctx.Array("q", 2 * n, lock=False))


class _SharedIds:
    """Request ids from a counter in shared memory, up to ``end`` (exclusive; None: unbounded)."""

    def __init__(self, value: Any, end: int | None) -> None:
        self.value, self.end = value, end

    def __iter__(self) -> _SharedIds:
        return self

    def __next__(self) -> int:
        with self.value.get_lock():
            i = self.value.value
            self.value.value = i + 1
        if self.end is not None and i >= self.end:
            raise StopIteration
        return i


def _plan(base_url: str, model: str, prompts: Sequence[Prompt], load: Any, clients: int, kw: dict[str, Any],
          setup: Callable[[int], None] | None) -> tuple[_Plan, int, list[int] | None]:
    import json

    from benchflow.loadgen import _PATHS, _validate, api_root, build_body
    from benchflow.schedule import send_offsets_ns
    from benchflow.spec import ConcurrencyLoad

    api, warmup = kw.get("api", "completions"), kw.get("warmup_requests", 0)
    max_requests, max_duration_s = kw.get("max_requests"), kw.get("max_duration_s")
    timeout_s = kw.get("request_timeout_s", 60.0)
    _validate(prompts, load, api, warmup, max_requests, max_duration_s, timeout_s)
    total = warmup + max_requests if max_requests is not None else None
    if total is None and max_duration_s is None:
        total = warmup + len(prompts)
    n_bodies = len(prompts) if total is None else min(len(prompts), total)
    dicts = [build_body(model, p, api=api, temperature=kw.get("temperature", 0.0),
                        ignore_eos=kw.get("ignore_eos", True), extra_body=kw.get("extra_body"))
             for p in prompts[:n_bodies]]
    closed = isinstance(load, ConcurrencyLoad)
    cap = load.concurrency if closed else load.max_concurrency
    n = min(clients, cap) if cap else clients
    warm_cap = min(cap or warmup, warmup)
    offsets = None
    plan = _Plan(url=api_root(base_url) + _PATHS[api],
                 bodies=[json.dumps(d, separators=(",", ":")).encode() for d in dicts],
                 input_tokens=[p.input_tokens for p in prompts[:n_bodies]],
                 max_tokens=[d.get("max_tokens") if isinstance(d.get("max_tokens"), int) else None for d in dicts],
                 warmup=warmup, total=total, request_timeout_s=timeout_s,
                 warm_workers=[_share(warm_cap, n, i) for i in range(n)],
                 workers=[_share(cap, n, i) if cap else 0 for i in range(n)], parent_pid=os.getpid(), setup=setup)
    if not closed:
        measured = None if total is None else total - warmup
        fixed = getattr(load, "send_offsets_ns", None)  # a trace's recorded send times (benchflow.traces)
        offsets = fixed(measured) if fixed is not None else send_offsets_ns(
            load.rate, load.arrival, n=measured, duration_s=max_duration_s, burstiness=load.burstiness,
            seed=kw.get("seed", 0))
        plan.open_ids = [list(range(warmup + i, warmup + len(offsets), n)) for i in range(n)]
        plan.open_offsets = [offsets[i::n] for i in range(n)]
    return plan, n, offsets


async def run_clients(base_url: str, model: str, prompts: Sequence[Prompt], load: Any, *, clients: int,
                      setup: Callable[[int], None] | None = None, stall_after_s: float | None = None,
                      should_stop: Callable[[], str | None] | None = None, **kw: Any) -> tuple[LoadRun, dict]:
    """Like ``loadgen.run_load`` (same keyword arguments), over ``clients`` processes; the records
    merged onto this process's ``perf_counter_ns``. ``on_request`` (a progress display) is called
    here, every few tens of ms, with a stand-in per request ended in a child (only its
    ``error_class`` is set: ``"failed"`` or ``None``)."""
    from benchflow.errors import SpecError
    from benchflow.load_watch import LoadWatch
    from benchflow.spec import ConcurrencyLoad

    if stall_after_s is not None and not stall_after_s > 0:
        raise SpecError([f"stall_after_s: must be > 0, got {stall_after_s}"])
    on_request = kw.pop("on_request", None)
    if kw.pop("saturation", None) is not None and load.mode == "open":
        logger.warning("load %s: early stop on over-saturation is not applied with %d client processes "
                       "(it needs one event loop's view of the queue); the cell runs its full bound", load.label,
                       clients)
    plan, n, _ = _plan(base_url, model, prompts, load, clients, kw, setup)
    if n < clients:
        logger.info("load %s: %d client processes, not %d (one per concurrent request at most)", load.label, n, clients)
    ctx = mp.get_context("spawn")
    ipc = _Ipc.make(ctx, n, plan.warmup)
    procs = [ctx.Process(target=_child_main, args=(plan, i, ipc), name=f"benchflow-client-{i}", daemon=True)
             for i in range(n)]
    clock0 = measure_offset()
    results: dict[int, dict[str, Any]] = {}
    try:
        for p in procs:
            p.start()  # from this (the loop's) thread: PR_SET_PDEATHSIG follows the thread
        await _gather(ipc, procs, {}, "ready", START_TIMEOUT_S)
        anchor_at, anchor_ns = datetime.now(UTC), perf_counter_ns()
        logger.info("load %s on %s: %d client processes", load.label, plan.url, n)
        ipc.go.set()
        watch = LoadWatch(_Beats(ipc.beats, n, clock0), kw.get("max_duration_s"), stall_after_s, should_stop)
        stop_reason = await watch.run(_gather(ipc, procs, results, "done", None, _Progress(ipc.ended, on_request)))
        if stop_reason != "done":
            ipc.stop.set()
            await _gather(ipc, procs, results, "done", COLLECT_TIMEOUT_S)
    finally:
        ipc.stop.set()
        ipc.go.set()
        await _reap(procs, ipc)
    clock1 = measure_offset()
    records, clock = _merge(results, clock0, clock1)
    if stop_reason == "done":
        stop_reason = "max_requests" if kw.get("max_requests") is not None else (
            "max_duration" if kw.get("max_duration_s") is not None else "prompts")
    if stop_reason in ("stalled", "cancelled"):
        logger.warning("load %s on %s stopped: %s %s", load.label, plan.url, stop_reason, watch.detail)
    run = LoadRun(records=records, anchor_ns=anchor_ns, anchor_at=anchor_at, mode=load.mode,
                  concurrency=load.concurrency if isinstance(load, ConcurrencyLoad) else load.max_concurrency,
                  target_rate=None if isinstance(load, ConcurrencyLoad) else load.rate,
                  stop_reason=stop_reason, stop_detail=watch.detail)
    verdict = judge([{"index": i, **results[i]["monitor"]} for i in sorted(results)], n)
    verdict["client"]["clock"] = clock
    _warn(verdict)
    return run, verdict


class _Beats:
    """The stall watchdog's view of the children (``LoadWatch`` asks ``stall``)."""

    def __init__(self, beats: Any, n: int, clock: ClockOffset) -> None:
        self.beats, self.n, self.clock = beats, n, clock

    def stall(self, now_ns: int, stall_after_s: float) -> dict[str, Any] | None:
        b = list(self.beats)
        in_flight = sum(b[4 * i] for i in range(self.n))
        if in_flight == 0:
            return None
        now = now_ns + self.clock.offset_ns
        marks = [b[4 * i + 1] for i in range(self.n) if b[4 * i]]
        tokens = [b[4 * i + 2] for i in range(self.n) if b[4 * i + 2]]
        marks += tokens + [b[4 * i + 3] for i in range(self.n) if b[4 * i + 3]]
        quiet_s = (now - max(marks)) / 1e9
        if quiet_s < stall_after_s:
            return None
        return {"seconds_since_last_token": round((now - max(tokens)) / 1e9, 3) if tokens else None,
                "seconds_without_progress": round(quiet_s, 3), "in_flight": in_flight,
                "stall_after_s": stall_after_s}


class _Progress:
    """Calls ``on_request`` once per request the children report ended (a stand-in record)."""

    def __init__(self, ended: Any, on_request: Callable[[Any], None] | None) -> None:
        self.ended, self.on_request, self.done, self.failed = ended, on_request, 0, 0

    def __call__(self) -> None:
        if self.on_request is None:
            return
        counts = list(self.ended)
        done, failed = sum(counts[0::2]), sum(counts[1::2])
        for k in range(done - self.done):
            self.on_request(_Ended("failed" if k < failed - self.failed else None))
        self.done, self.failed = done, failed


@dataclass(frozen=True)
class _Ended:
    error_class: str | None


async def _gather(ipc: _Ipc, procs: list, got: dict[int, Any], kind: str, timeout_s: float | None,
                  progress: Callable[[], None] | None = None) -> None:
    """Reads the children's messages until each has sent ``kind``; raises for a child's error,
    a child that died silently, or the timeout."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    silent: dict[int, int] = {}
    while len(got) < len(procs):
        try:
            what, i, payload = ipc.queue.get_nowait()
        except queue_mod.Empty:
            if progress is not None:
                progress()
            for i, p in enumerate(procs):
                if i not in got and p.exitcode is not None:
                    silent[i] = silent.get(i, 0) + 1
                    if silent[i] > 20:  # its last message had time to arrive
                        raise ClientProcessError(f"client process {i} (pid {p.pid}) exited with code {p.exitcode} "
                                                 f"before sending its {kind!r} message (a script that runs a "
                                                 "multi-client cell must guard its main code with "
                                                 "if __name__ == '__main__')")
            if deadline is not None and loop.time() > deadline:
                raise ClientProcessError(f"client processes: {len(procs) - len(got)} of {len(procs)} did not "
                                         f"send {kind!r} within {timeout_s:g} s")
            await asyncio.sleep(_POLL_S if kind == "ready" else 0.02)
            continue
        if what == "error":
            raise ClientProcessError(f"client process {i} failed: {payload}")
        if what == kind:
            got[i] = payload
    if progress is not None:
        progress()


async def _reap(procs: list, ipc: _Ipc) -> None:
    """Waits briefly for the children to exit, then terminates, then kills them (reading what
    they still send, so that none blocks on a full pipe)."""
    loop = asyncio.get_running_loop()
    for action, grace_s in ((None, 5.0), ("terminate", 3.0), ("kill", 3.0)):
        alive = [p for p in procs if p.pid is not None and p.exitcode is None]
        if not alive:
            break
        for p in alive:
            if action:
                getattr(p, action)()
        end = loop.time() + grace_s
        while loop.time() < end and any(p.exitcode is None for p in alive):
            try:
                while True:
                    ipc.queue.get_nowait()
            except (queue_mod.Empty, OSError, EOFError, ValueError):
                pass
            await asyncio.sleep(0.02)
    for p in procs:
        if p.pid is not None and p.exitcode is not None:
            p.join(0)


def _merge(results: dict[int, dict[str, Any]], clock0: ClockOffset,
           clock1: ClockOffset) -> tuple[list[RequestRecord], dict[str, Any]]:
    """All children's records on this process's ``perf_counter_ns``, sorted by send time; and the
    clock figures: each child's offsets and the bound on the error of a merged timestamp."""
    records: list[RequestRecord] = []
    procs = []
    parent_drift = abs(clock1.offset_ns - clock0.offset_ns)
    for i in sorted(results):
        r = results[i]
        c0, c1 = r["clock0"], r["clock1"]
        shift = c0.offset_ns - clock0.offset_ns
        bound = c0.uncertainty_ns + clock0.uncertainty_ns + abs(c1.offset_ns - c0.offset_ns) + parent_drift
        for rec in r["records"]:
            if shift:
                for name in TIMESTAMP_FIELDS:
                    if getattr(rec, name) is not None:
                        setattr(rec, name, getattr(rec, name) + shift)
                rec.chunks = [(t + shift, k) for t, k in rec.chunks]
            records.append(rec)
        procs.append({"index": i, "pid": r["monitor"]["pid"], "offset_ns": c0.offset_ns,
                      "uncertainty_ns": c0.uncertainty_ns, "offset_end_ns": c1.offset_ns,
                      "shift_ns": shift, "error_bound_ns": bound, "requests": len(r["records"])})
    records.sort(key=lambda rec: (rec.start_ns, rec.request_id))
    clock = {"reference": "CLOCK_MONOTONIC", "parent_offset_ns": clock0.offset_ns,
             "parent_uncertainty_ns": clock0.uncertainty_ns, "parent_offset_end_ns": clock1.offset_ns,
             "error_bound_ns": max((p["error_bound_ns"] for p in procs), default=0), "processes": procs}
    return records, clock


# ---- the child process ---------------------------------------------------------------------------

def _die_with_parent(parent_pid: int) -> None:
    """PR_SET_PDEATHSIG (as ``tasks.local_server``): SIGKILL to this process when its parent dies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child_main(plan: _Plan, index: int, ipc: _Ipc) -> None:  # pragma: no cover - runs in the child
    _die_with_parent(plan.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    try:
        if plan.setup is not None:
            plan.setup(index)
        payload = asyncio.run(_child_run(plan, index, ipc))
        ipc.queue.put(("done", index, payload))
    except BaseException as e:
        ipc.queue.put(("error", index, f"{type(e).__name__}: {e}"[:300] + " | " +
                       " ".join(traceback.format_exc().split())[-600:]))


async def _child_run(plan: _Plan, i: int, ipc: _Ipc) -> dict[str, Any]:  # pragma: no cover - in the child
    from benchflow.exchange import open_pool
    from benchflow.loadgen import _Client

    clock0 = measure_offset()
    async with open_pool(plan.url) as pool:
        client = _Client(pool, plan.bodies, plan.input_tokens, plan.max_tokens, plan.warmup, plan.request_timeout_s)

        def ended(rec: RequestRecord) -> None:
            ipc.ended[2 * i] += 1
            if rec.error_class is not None:
                ipc.ended[2 * i + 1] += 1

        client.on_request = ended
        ipc.queue.put(("ready", i, None))
        while not ipc.go.is_set():
            await asyncio.sleep(_POLL_S)
        task = asyncio.ensure_future(_child_phases(client, plan, i, ipc, clock0))
        off = clock0.offset_ns

        def tick() -> None:
            base = 4 * i
            ipc.beats[base] = client.in_flight
            ipc.beats[base + 1] = client.busy_since_ns + off
            ipc.beats[base + 2] = client.last_token_ns + off if client.last_token_ns is not None else 0
            ipc.beats[base + 3] = client.last_answer_ns + off if client.last_answer_ns is not None else 0
            if ipc.stop.is_set() and not task.done():
                task.cancel()

        monitor = LoopMonitor(on_tick=tick, process_cpu=True)
        monitor.start()
        try:
            await task
        except asyncio.CancelledError:
            if not ipc.stop.is_set():
                raise
        finally:
            monitor.stop()
            ipc.beats[4 * i] = 0
    return {"records": client.records, "clock0": clock0, "clock1": measure_offset(), "monitor": monitor.evidence()}


async def _child_phases(client: Any, plan: _Plan, i: int, ipc: _Ipc,
                        clock: ClockOffset) -> None:  # pragma: no cover - in the child
    from benchflow.loadgen import _closed_loop, _open_loop
    from benchflow.send_timing import _QuietGc

    closed = plan.open_ids is None
    with _QuietGc(young=True) if closed else contextlib.nullcontext():  # as loadgen._phases
        if plan.warm_workers[i]:
            await _closed_loop(client, plan.warm_workers[i], plan.warmup,
                               ids=_SharedIds(ipc.warm_counter, plan.warmup))
        ipc.ready[i] = monotonic_ns()
        while not all(ipc.ready[:]):
            await asyncio.sleep(_POLL_S)
        t0_ns = max(ipc.ready[:]) + START_MARGIN_NS - clock.offset_ns  # one instant for every process
        delay_ns = t0_ns - perf_counter_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        if closed:
            if plan.workers[i]:
                await _closed_loop(client, plan.workers[i], plan.total, ids=_SharedIds(ipc.counter, plan.total))
        else:
            await _open_loop(client, plan.open_offsets[i], plan.workers[i] or None, ids=plan.open_ids[i],
                             t0_ns=t0_ns)
