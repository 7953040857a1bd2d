"""The streaming load generator: drives an OpenAI-compatible endpoint and records raw facts.

One :func:`run_load` call is one measured run (one cell). It opens ONE pool of keep-alive
connections (:mod:`benchflow.http_stream`: a lean HTTP/1.1 client, each read timestamped and parsed
where it arrives), sends streaming ``/v1/completions`` or ``/v1/chat/completions`` requests in a
closed loop (N workers) or an open loop (a pre-computed schedule, :mod:`benchflow.schedule`),
and returns a :class:`~benchflow.records.LoadRun` holding one
:class:`~benchflow.records.RequestRecord` per request sent. Metrics are derived later by
:mod:`benchflow.stats` (definitions in METRICS.md); nothing is aggregated here.

Warm-up requests run as a phase of their own that finishes before the first measured request
is sent (as ``vllm bench serve`` does), so no warm-up token is served inside the measurement
window.

Failed requests are data: HTTP errors, timeouts, refused connections and cut streams are
recorded with their error class and never stop the run. When ``max_duration_s`` ends, when the
server stalls (no output token from any request in flight for ``stall_after_s``), or when the
caller's ``should_stop`` returns a reason, the requests still in flight are cancelled and
recorded with ``incomplete=True`` (their tokens delivered so far are kept in their chunks).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, UTC
from time import perf_counter_ns
from typing import Any

import aiohttp

from benchflow.asyncrun import run_sync
from benchflow.errors import EndpointUnreachableError, SpecError
from benchflow.exchange import api_root, connect_reason, exchange_into, open_pool
from benchflow.http_stream import Pool
from benchflow.load_watch import LoadWatch
from benchflow.records import LoadRun, Prompt, RequestRecord
from benchflow.saturation import Sample, SaturationConfig, SaturationDetector, describe
from benchflow.schedule import send_offsets_ns
from benchflow.send_timing import WARM_CONNECTIONS, _QuietGc, _until
from benchflow.spec import ConcurrencyLoad, RateLoad

__all__ = ["run_load", "run_load_sync", "check_endpoint", "check_endpoint_sync", "build_body", "api_root"]

logger = logging.getLogger(__name__)

_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


def build_body(
    model: str, prompt: Prompt, *, api: str = "completions", temperature: float = 0.0,
    ignore_eos: bool = True, extra_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one streaming request (``extra_body`` is merged last and wins)."""
    body: dict[str, Any] = {"model": model}
    if api == "chat":
        body["messages"] = list(prompt.messages) if prompt.messages else [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    body["max_tokens"] = prompt.max_tokens
    body["temperature"] = temperature
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM / SGLang extension
        body["min_tokens"] = prompt.max_tokens
    if extra_body:
        body.update(extra_body)
    return body


class _Client:
    """Sends the requests of one run through one shared session and keeps their records."""

    #: Called with each request's record when it ends (``benchflow bench``'s progress).
    on_request: Callable[[RequestRecord], None] | None = None

    def __init__(self, pool: Pool, bodies: list[bytes], input_tokens: list[int],
                 max_tokens: list[int | None], warmup: int, request_timeout_s: float) -> None:
        self.pool = pool
        self.requests = [pool.request(b) for b in bodies]  # built once, sent as they are
        self.input_tokens = input_tokens
        self.max_tokens = max_tokens
        self.warmup = warmup
        self.timeout_s = request_timeout_s
        self.records: list[RequestRecord] = []
        #: Requests sent and not yet ended, and the progress clocks the stall watchdog reads.
        self.in_flight = 0
        self.busy_since_ns = perf_counter_ns()  # when in_flight last went from 0 to 1
        self.last_token_ns: int | None = None  # the last output message of any request
        self.last_answer_ns: int | None = None  # the last HTTP error answer (the server is answering)
        #: Open loop: requests due and waiting for a free slot (``max_concurrency``).
        self.waiting = 0
        #: The start of the measured phase, and the ``(due_ns, first_token_ns)`` of each measured
        #: request whose first token came since the last :meth:`saturation_sample`.
        self.measured_since_ns: int | None = None
        self.new_first_tokens: list[tuple[int, int]] = []
        self.watched = False  # a saturation detector drains new_first_tokens

    def first_token(self, rec: RequestRecord, t_ns: int) -> None:
        if self.watched and not rec.warmup:
            self.new_first_tokens.append((rec.queued_ns or rec.start_ns, t_ns))

    def saturation_sample(self, now_ns: int) -> Sample | None:
        """What :class:`~benchflow.saturation.SaturationDetector` reads: the measured phase's
        elapsed seconds, the requests outstanding (in flight or waiting for a slot) and the new
        first tokens (TTFT counted from when the request was due); ``None`` before that phase."""
        t0 = self.measured_since_ns
        if t0 is None:
            return None
        firsts, self.new_first_tokens = self.new_first_tokens, []
        return Sample((now_ns - t0) / 1e9, self.in_flight + self.waiting,
                      tuple(((due - t0) / 1e9, (first - due) / 1e9) for due, first in firsts))

    async def send(self, idx: int, scheduled_ns: int | None = None, queued_ns: int | None = None) -> None:
        k = idx % len(self.requests)
        rec = RequestRecord(request_id=idx, warmup=idx < self.warmup, start_ns=0, scheduled_ns=scheduled_ns,
                            queued_ns=queued_ns, input_tokens=self.input_tokens[k])
        self.records.append(rec)
        rec.start_ns = perf_counter_ns()
        if self.in_flight == 0:
            self.busy_since_ns = rec.start_ns
        self.in_flight += 1
        try:
            await exchange_into(self.pool, self.requests[k], rec, self.max_tokens[k], self.timeout_s, self)
        finally:
            self.in_flight -= 1
            if rec.status is not None and not 200 <= rec.status < 300:
                self.last_answer_ns = rec.end_ns
        if rec.error_class is not None and logger.isEnabledFor(logging.DEBUG):
            logger.debug("request %s failed: %s %s", idx, rec.error_class, rec.error_message)
        if self.on_request is not None:
            self.on_request(rec)


    def stall(self, now_ns: int, stall_after_s: float) -> dict[str, Any] | None:
        """The evidence of a stall, or ``None``: requests are in flight and none of them has had
        an output message (and the server no error answer) for ``stall_after_s``."""
        if self.in_flight == 0:
            return None
        since = max(t for t in (self.busy_since_ns, self.last_token_ns, self.last_answer_ns) if t is not None)
        quiet_s = (now_ns - since) / 1e9
        if quiet_s < stall_after_s:
            return None
        last = self.last_token_ns
        return {"seconds_since_last_token": round((now_ns - last) / 1e9, 3) if last is not None else None,
                "seconds_without_progress": round(quiet_s, 3), "in_flight": self.in_flight,
                "stall_after_s": stall_after_s}


async def _closed_loop(client: _Client, concurrency: int, total: int | None, first: int = 0,
                       ids: Iterator[int] | None = None) -> None:
    # ``ids``: request ids shared with other processes (benchflow.clients), else a local count
    counter = itertools.count(first) if ids is None else ids

    async def worker() -> None:
        for idx in counter:
            if total is not None and idx >= total:
                return
            await client.send(idx)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open_loop(client: _Client, offsets_ns: list[int], cap: int | None, first: int = 0,
                     ids: list[int] | None = None, t0_ns: int | None = None) -> None:
    # ``ids``/``t0_ns``: this process's share of a schedule dealt out over processes (benchflow.clients)
    sem = asyncio.Semaphore(cap) if cap else None
    tasks: set[asyncio.Task[None]] = set()

    async def capped(idx: int, scheduled_ns: int, queued_ns: int) -> None:
        client.waiting += 1
        try:
            await sem.acquire()
        finally:
            client.waiting -= 1
        try:
            await client.send(idx, scheduled_ns, queued_ns)
        finally:
            sem.release()

    with _QuietGc() as quiet:
        t0_ns = perf_counter_ns() if t0_ns is None else t0_ns
        client.measured_since_ns = t0_ns
        try:
            previous_ns = None
            for idx, offset in (enumerate(offsets_ns, start=first) if ids is None else zip(ids, offsets_ns)):
                scheduled_ns = t0_ns + offset
                await _until(scheduled_ns, quiet, None if previous_ns is None else scheduled_ns - previous_ns)
                previous_ns = scheduled_ns
                queued_ns = perf_counter_ns()  # due now; with a cap it waits for a slot from here
                coro = (client.send(idx, scheduled_ns, queued_ns) if sem is None
                        else capped(idx, scheduled_ns, queued_ns))
                task = asyncio.create_task(coro)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(set(tasks))
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks))
            raise


def _validate(prompts: Sequence[Prompt], load: Any, api: str, warmup_requests: int, max_requests: int | None,
              max_duration_s: float | None, request_timeout_s: float) -> None:
    problems = []
    if not prompts:
        problems.append("prompts: at least one prompt is needed")
    if not isinstance(load, (ConcurrencyLoad, RateLoad)):
        problems.append(f"load: must be ConcurrencyLoad or RateLoad, got {type(load).__name__}")
    if api not in _PATHS:
        problems.append(f"api: must be one of {', '.join(_PATHS)}, got {api!r}")
    if warmup_requests < 0:
        problems.append(f"warmup_requests: must be >= 0, got {warmup_requests}")
    if max_requests is not None and max_requests < 1:
        problems.append(f"max_requests: must be >= 1, got {max_requests}")
    if max_duration_s is not None and not max_duration_s > 0:
        problems.append(f"max_duration_s: must be > 0, got {max_duration_s}")
    if not request_timeout_s > 0:
        problems.append(f"request_timeout_s: must be > 0, got {request_timeout_s}")
    if problems:
        raise SpecError(problems)


async def run_load(
    base_url: str, model: str, prompts: Sequence[Prompt], load: ConcurrencyLoad | RateLoad, *,
    api: str = "completions", warmup_requests: int = 0, max_requests: int | None = None,
    max_duration_s: float | None = None, request_timeout_s: float = 60.0, temperature: float = 0.0,
    ignore_eos: bool = True, seed: int = 0, extra_body: dict[str, Any] | None = None,
    stall_after_s: float | None = None, should_stop: Callable[[], str | None] | None = None,
    on_request: Callable[[RequestRecord], None] | None = None, saturation: SaturationConfig | None = None,
) -> LoadRun:
    """Runs one load point against ``base_url`` and returns every request's raw facts.

    ``warmup_requests`` are sent first (``warmup=True``) as a phase of their own: at the load's
    concurrency (closed loop) or all at once up to ``max_concurrency`` (open loop), and the
    measured requests start only when every warm-up request has ended. The run stops after
    ``max_requests`` measured requests and/or when ``max_duration_s`` (which includes the
    warm-up) ends; requests still in flight then are cancelled and recorded ``incomplete``. With
    neither bound, each prompt is sent once. Prompts are cycled when more requests are needed
    than there are prompts. ``seed`` seeds the open-loop schedule.

    ``stall_after_s``: stop at once (``stop_reason == "stalled"``, the evidence in
    ``stop_detail``) when requests are in flight and none has had an output message for this
    long. ``should_stop``: polled (in a worker thread) every
    :data:`benchflow.load_watch.POLL_S`; when it returns a reason the run stops
    (``stop_reason == "cancelled"``, ``stop_detail["reason"]``). ``on_request``: called in the
    event loop with each request's record as it ends (a progress display; keep it quick).
    ``saturation`` (open loop only): stop when :mod:`benchflow.saturation` finds that the server
    no longer keeps up (``stop_reason == "saturated"``, the evidence in ``stop_detail``).

    Raises :class:`SpecError` for invalid arguments; request failures are recorded, never raised.
    """
    _validate(prompts, load, api, warmup_requests, max_requests, max_duration_s, request_timeout_s)
    if stall_after_s is not None and not stall_after_s > 0:
        raise SpecError([f"stall_after_s: must be > 0, got {stall_after_s}"])
    total: int | None = warmup_requests + max_requests if max_requests is not None else None
    if total is None and max_duration_s is None:
        total = warmup_requests + len(prompts)
    n_bodies = len(prompts) if total is None else min(len(prompts), total)
    dicts = [build_body(model, p, api=api, temperature=temperature, ignore_eos=ignore_eos, extra_body=extra_body)
             for p in prompts[:n_bodies]]
    bodies = [json.dumps(d, separators=(",", ":")).encode() for d in dicts]
    max_tokens = [d.get("max_tokens") if isinstance(d.get("max_tokens"), int) else None for d in dicts]
    offsets_ns = None
    if isinstance(load, RateLoad):
        measured = None if total is None else total - warmup_requests
        fixed = getattr(load, "send_offsets_ns", None)  # a trace's recorded send times (benchflow.traces)
        offsets_ns = fixed(measured) if fixed is not None else send_offsets_ns(
            load.rate, load.arrival, n=measured, duration_s=max_duration_s, burstiness=load.burstiness, seed=seed)
    url = api_root(base_url) + _PATHS[api]
    async with open_pool(url) as pool:
        client = _Client(pool, bodies, [p.input_tokens for p in prompts[:n_bodies]], max_tokens,
                         warmup_requests, request_timeout_s)
        client.on_request = on_request
        if offsets_ns and not warmup_requests:  # warm-up requests would have opened them
            await pool.warm(min(len(offsets_ns), load.max_concurrency or WARM_CONNECTIONS, WARM_CONNECTIONS))
        anchor_at = datetime.now(UTC)
        anchor_ns = perf_counter_ns()
        logger.info("load %s on %s: %s requests, duration bound %s s", load.label, url,
                    total if total is not None else "unbounded", max_duration_s)
        detector = (SaturationDetector(saturation) if isinstance(load, RateLoad) and saturation is not None
                    and saturation.enabled else None)
        client.watched = detector is not None
        watch = LoadWatch(client, max_duration_s, stall_after_s, should_stop, detector)
        stop_reason = await watch.run(_phases(client, load, warmup_requests, total, offsets_ns))
    if stop_reason == "done":
        stop_reason = "max_requests" if max_requests is not None else (
            "max_duration" if max_duration_s is not None else "prompts")
    if stop_reason in ("stalled", "cancelled"):
        logger.warning("load %s on %s stopped: %s %s", load.label, url, stop_reason, watch.detail)
    elif stop_reason == "saturated":
        logger.warning("load %s on %s stopped: saturated: %s", load.label, url, describe(watch.detail))
    return LoadRun(
        records=client.records, anchor_ns=anchor_ns, anchor_at=anchor_at, mode=load.mode,
        concurrency=load.concurrency if isinstance(load, ConcurrencyLoad) else load.max_concurrency,
        target_rate=load.rate if isinstance(load, RateLoad) else None, stop_reason=stop_reason,
        stop_detail=watch.detail,
    )


async def _phases(client: _Client, load: ConcurrencyLoad | RateLoad, warmup: int, total: int | None,
                  offsets_ns: list[int] | None) -> None:
    """The warm-up phase, run to completion, then the measured phase. A closed loop runs without full
    garbage collections from before its warm-up (:class:`~benchflow.send_timing._QuietGc`; the open
    loop has its own)."""
    closed = offsets_ns is None
    with _QuietGc(young=True) if closed else contextlib.nullcontext():
        if warmup:
            cap = load.concurrency if isinstance(load, ConcurrencyLoad) else (load.max_concurrency or warmup)
            await _closed_loop(client, min(cap, warmup), warmup)
        if closed:
            await _closed_loop(client, load.concurrency, total, first=warmup)
        else:
            await _open_loop(client, offsets_ns, load.max_concurrency, first=warmup)


def run_load_sync(
    base_url: str, model: str, prompts: Sequence[Prompt], load: ConcurrencyLoad | RateLoad, *,
    api: str = "completions", warmup_requests: int = 0, max_requests: int | None = None,
    max_duration_s: float | None = None, request_timeout_s: float = 60.0, temperature: float = 0.0,
    ignore_eos: bool = True, seed: int = 0, extra_body: dict[str, Any] | None = None,
    stall_after_s: float | None = None, should_stop: Callable[[], str | None] | None = None,
    saturation: SaturationConfig | None = None,
) -> LoadRun:
    """Blocking :func:`run_load` (runs its own event loop; safe to call from a worker thread)."""
    return run_sync(run_load(
        base_url, model, prompts, load, api=api, warmup_requests=warmup_requests, max_requests=max_requests,
        max_duration_s=max_duration_s, request_timeout_s=request_timeout_s, temperature=temperature,
        ignore_eos=ignore_eos, seed=seed, extra_body=extra_body, stall_after_s=stall_after_s,
        should_stop=should_stop, saturation=saturation,
    ))


async def check_endpoint(base_url: str, timeout_s: float = 5.0) -> None:
    """Checks that an OpenAI-compatible server answers: GET /v1/models, else GET /health.

    Raises :class:`EndpointUnreachableError` with a one-line reason, such as
    ``cannot reach http://127.0.0.1:9: connection refused``.
    """
    shown = base_url.strip().rstrip("/")
    root = api_root(base_url)
    answers = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            for path in ("/v1/models", "/health"):
                async with session.get(root + path) as resp:
                    if 200 <= resp.status < 300:
                        return
                    answers.append(f"{path} answered HTTP {resp.status}")
    except TimeoutError as e:
        raise EndpointUnreachableError(f"cannot reach {shown}: no answer within {timeout_s:g} s") from e
    except (aiohttp.ClientError, OSError, ValueError) as e:
        raise EndpointUnreachableError(f"cannot reach {shown}: {connect_reason(e)}") from e
    raise EndpointUnreachableError(f"cannot reach {shown}: {', '.join(answers)}")


def check_endpoint_sync(base_url: str, timeout_s: float = 5.0) -> None:
    """Blocking :func:`check_endpoint`."""
    run_sync(check_endpoint(base_url, timeout_s))
