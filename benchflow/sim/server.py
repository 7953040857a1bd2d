"""The simulator's HTTP server (aiohttp.web): vLLM-compatible endpoints over the step loop.

Endpoints: ``/v1/completions``, ``/v1/chat/completions`` (SSE streaming or not), ``/v1/models``,
``/health``, ``/metrics``. :func:`run_server` is what ``benchflow sim`` and ``python -m
benchflow.sim`` call; :func:`running_sim` starts one inside an existing event loop (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from benchflow.sim.config import SimConfig, build_engine_config
from benchflow.sim.engine import Engine
from benchflow.sim.faults import FaultAction, FaultPlan
from benchflow.sim.metrics import CONTENT_TYPE, SimMetrics
from benchflow.sim.prefix_cache import block_hashes
from benchflow.sim.protocol import (
    ParsedRequest, ProtocolError, ResponseWriter, error_body, parse_request, token_text,
)
from benchflow.sim.runner import RequestStream, StepLoop

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0
#: Largest request body accepted (long prompts; aiohttp's default is 1 MiB).
MAX_BODY_BYTES = 64 * 1024 * 1024
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class SimServer:
    """One simulated engine and its HTTP handlers. Build with :meth:`create`, serve :meth:`app`."""

    def __init__(self, config: SimConfig, engine: Engine):
        self.config = config
        self.engine = engine
        self.metrics = SimMetrics(config.served_name, running=lambda: engine.num_running,
                                  waiting=lambda: engine.num_waiting, kv_usage=lambda: engine.kv_cache_usage)
        self.loop = StepLoop(engine, self.metrics)
        self.faults = FaultPlan(crash_after=config.crash_after, stall_after=config.stall_after,
                                error_rate=config.error_rate, seed=config.seed)
        self._received = itertools.count(1)
        self._ready_at = time.perf_counter() + config.startup_delay_s
        self._loop_task: asyncio.Task | None = None
        self._ready_task: asyncio.Task | None = None

    @classmethod
    def create(cls, config: SimConfig) -> SimServer:
        """Raises BackendStartError (vLLM's message) when the KV cache gets no memory."""
        return cls(config, Engine(build_engine_config(config)))

    @property
    def ready(self) -> bool:
        return time.perf_counter() >= self._ready_at

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._ready_at = time.perf_counter() + self.config.startup_delay_s
        self._loop_task = asyncio.create_task(self.loop.run(), name="sim-step-loop")
        if self.config.startup_delay_s > 0:
            logger.info("Loading model %s (simulated start-up delay %.1f s)", self.config.model,
                        self.config.startup_delay_s)
            self._ready_task = asyncio.create_task(self._announce_ready())

    async def _announce_ready(self) -> None:
        await asyncio.sleep(self.config.startup_delay_s)
        logger.info("Application startup complete.")

    async def _on_cleanup(self, _app: web.Application) -> None:
        for task in (self._loop_task, self._ready_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- simple endpoints ----------------------------------------------------------------
    async def _health(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="loading")
        return web.Response(status=200)

    async def _models(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return _error(503, "The model is loading.", "ServiceUnavailableError")
        name = self.config.served_name
        card = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                "root": self.config.model, "parent": None, "max_model_len": self.engine.config.max_model_len,
                "permission": []}
        return web.json_response({"object": "list", "data": [card]})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    # --- completions ---------------------------------------------------------------------
    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        if not self.ready:
            return _error(503, "The model is loading.", "ServiceUnavailableError")
        n = next(self._received)
        action = self.faults.on_request(n)
        if action is FaultAction.CRASH:
            _crash(self.config.crash_after, n)
        if action is FaultAction.STALL and not self.loop.halted:
            logger.warning("simulated stall (--stall-after %s): request %d received, streams stop sending",
                           self.config.stall_after, n)
            self.loop.halt()
        if action is FaultAction.ERROR:
            return _error(500, "simulated internal server error (--error-rate)", "InternalServerError")
        try:
            body = await request.json(loads=json.loads)
        except ValueError:
            return _error(400, "request body is not valid JSON", "BadRequestError")
        try:
            parsed = self._parse(body, kind)
        except ProtocolError as e:
            return _error(e.status, e.message, e.err_type)
        request_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{n}"
        ec = self.engine.config
        hashes = block_hashes(parsed.tokens, ec.block_size) if ec.enable_prefix_caching else ()
        stream = self.loop.submit(request_id, parsed.prompt_tokens, parsed.max_tokens, parsed.priority, hashes)
        writer = ResponseWriter(parsed.kind, self.config.served_name, request_id)
        try:
            if parsed.stream:
                return await self._stream(request, stream, writer, n, parsed.include_usage)
            return await self._collect(stream, writer, n)
        finally:
            self.loop.abort(request_id)

    def _parse(self, body: object, kind: str) -> ParsedRequest:
        ec = self.engine.config
        parsed = parse_request(body, kind, ec.max_model_len)  # type: ignore[arg-type]
        if parsed.model is not None and parsed.model != self.config.served_name:
            raise ProtocolError(404, f"The model `{parsed.model}` does not exist.", "NotFoundError")
        if not ec.enable_chunked_prefill and parsed.prompt_tokens > ec.max_num_batched_tokens:
            raise ProtocolError(400, f"Input prompt ({parsed.prompt_tokens} tokens) is too long and exceeds the "
                                     f"limit of max_num_batched_tokens={ec.max_num_batched_tokens} "
                                     "(chunked prefill is disabled)")
        if parsed.priority != 0 and ec.scheduling_policy != "priority":
            raise ProtocolError(400, f"Got priority {parsed.priority} but Priority scheduling is not enabled.")
        return parsed

    async def _stream(self, request: web.Request, stream: RequestStream, writer: ResponseWriter, n: int,
                      include_usage: bool) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=_SSE_HEADERS)
        await resp.prepare(request)
        try:
            if writer.kind == "chat":
                await resp.write(writer.role_chunk())
            count = 0
            while True:
                out = await stream.queue.get()
                count += 1
                await resp.write(writer.token_chunk(token_text(n, out.index), out.finished))
                if out.finished:
                    break
            if include_usage:
                await resp.write(writer.usage_chunk(stream.prompt_tokens, count))
            await resp.write(writer.done())
            await resp.write_eof()
        except ConnectionError:
            logger.debug("client of %s went away", writer.id)
        return resp

    async def _collect(self, stream: RequestStream, writer: ResponseWriter, n: int) -> web.Response:
        parts = []
        while True:
            out = await stream.queue.get()
            parts.append(token_text(n, out.index))
            if out.finished:
                break
        return web.json_response(writer.full_response("".join(parts), stream.prompt_tokens, len(parts)))


def _error(status: int, message: str, err_type: str) -> web.Response:
    return web.json_response(error_body(status, message, err_type), status=status)


def _crash(crash_after: int | None, n: int) -> None:
    logger.error("simulated crash (--crash-after %s): request %d received, exiting with status 1", crash_after, n)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(1)


@dataclass(slots=True)
class RunningSim:
    """A simulator serving inside the current event loop."""

    server: SimServer
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def running_sim(config: SimConfig, server: SimServer | None = None) -> AsyncIterator[RunningSim]:
    """Serves ``config`` in this event loop until the block exits (port 0 picks a free port)."""
    server = server or SimServer.create(config)
    runner = web.AppRunner(server.app(), handle_signals=False, handler_cancellation=True,
                           shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        port = runner.addresses[0][1]
        logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", config.host, port)
        yield RunningSim(server, config.host, port)
    finally:
        await runner.cleanup()


async def serve(config: SimConfig, server: SimServer | None = None) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_sim(config, server):
        await stop.wait()
        logger.info("Shutting down (signal received)")


def run_server(config: SimConfig) -> int:
    """Blocks serving ``config``; returns the exit code (0 after SIGTERM). Raises
    BackendStartError when the simulated GPU has no memory for the KV cache."""
    logger.info("benchflow sim: resolved config %s", config.model_dump_json(by_alias=True))
    server = SimServer.create(config)  # fails (out of memory) before binding the port
    asyncio.run(serve(config, server))
    return 0
