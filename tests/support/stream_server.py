"""A streaming OpenAI-compatible test server with KNOWN timing (aiohttp.web, 127.0.0.1 only).

Every response streams ``ceil(max_tokens / tokens_per_message)`` output messages. The first is
written ``ttft_s`` after the handler starts, each next one ``gap_s`` after the previous, on an
absolute schedule (``t0 + ttft_s + k * gap_s``) so sleep overshoot never accumulates; the thread
and process servers run on a select() event loop whose timers are precise to microseconds (the
default epoll loop wakes up to 1 ms late). With
``ttft_s == gap_s == 0`` (zero-delay mode) the whole answer is written at once. The server stamps
nothing: the truth a test compares against is the configuration.

Behaviours, cycled per request (``behaviours=("ok", "http_500")`` alternates them):

- ``ok``: a normal stream (chat starts with a role-only message, then output, then a usage-only
  message, then ``[DONE]``);
- ``http_500`` / ``http_400``: an error status with a JSON error body;
- ``stall``: headers are sent, then nothing for ``stall_s``;
- ``cut``: ``cut_after`` output messages, then half a message and the connection is closed;
- ``no_done``: a normal stream whose ``[DONE]`` and usage are left out and whose last message
  is cut off (EOF without the final blank line);
- ``empty``: a role-only/usage-only stream without output, then ``[DONE]``;
- ``stream_error``: one output message, then ``data: {"error": {...,"code": 500}}``.

Use it in-process (``async with StreamServer(cfg) as url``), in a thread
(``with serve_in_thread(cfg) as url``), or in a separate process (``with serve_in_process(cfg)
as url``, or ``python -m tests.support.stream_server --port P --ttft-ms 50 --gap-ms 10``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import selectors
import subprocess
import sys
import threading
import time
from time import perf_counter_ns
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from benchflow.launch.process import free_port

BEHAVIOURS = ("ok", "http_500", "http_400", "stall", "cut", "no_done", "empty", "stream_error")


@dataclass(frozen=True)
class StreamServerConfig:
    ttft_s: float = 0.05
    gap_s: float = 0.01
    tokens_per_message: int = 1
    default_max_tokens: int = 16
    behaviours: tuple[str, ...] = ("ok",)
    cut_after: int = 2
    stall_s: float = 30.0
    #: Spend the last ``spin_s`` of each wait yielding (``sleep(0)``) instead of sleeping: only
    #: useful on an epoll event loop, whose timers wake up to 1 ms late. The thread and process
    #: servers run on a select() loop (microsecond timers) and need no spinning.
    spin_s: float = 0.0
    #: Send ": ping" keep-alive comments while waiting for the first token.
    keepalive: bool = False
    send_usage: bool = True
    #: Keep the JSON bodies received (``StreamServer.bodies``, at most 1000).
    record_bodies: bool = False
    #: Keep, per prompt, when its handler started and when its first output message was written
    #: (``perf_counter_ns``: CLOCK_MONOTONIC, the same clock in every process on Linux), served at
    #: ``GET /first_writes``: how bench/client_ttft.py takes the server's own time out of the TTFT.
    record_first_writes: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.behaviours) - set(BEHAVIOURS)
        if unknown or not self.behaviours:
            raise ValueError(f"behaviours must be a non-empty subset of {BEHAVIOURS}, got {self.behaviours}")

    @property
    def zero_delay(self) -> bool:
        return self.ttft_s == 0 and self.gap_s == 0


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class StreamServer:
    """The server; ``start()`` returns its base URL (``http://127.0.0.1:PORT``)."""

    def __init__(self, config: StreamServerConfig | None = None, port: int = 0) -> None:
        self.config = config or StreamServerConfig()
        self.port = port
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        #: ``(perf_counter_ns() after the write, output tokens written)``, one per write of output.
        self.written: list[tuple[int, int]] = []
        #: prompt -> (handler start, first output written), with ``record_first_writes``.
        self.first_writes: dict[str, tuple[int, int]] = {}
        self.url: str | None = None
        self._cycle = itertools.cycle(self.config.behaviours)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/first_writes", self._first_writes)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1000)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def tokens_between(self, start_ns: int, end_ns: int) -> int:
        """Output tokens the server had written inside ``[start_ns, end_ns]``."""
        return sum(n for t, n in self.written if start_ns <= t <= end_ns)

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stream-test", "object": "model"}]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _first_writes(self, request: web.Request) -> web.Response:
        return web.json_response({k: list(v) for k, v in self.first_writes.items()})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        start_ns = perf_counter_ns()
        body = await request.json()
        self.requests += 1
        if self.config.record_bodies and len(self.bodies) < 1000:
            self.bodies.append(body)
        behaviour = next(self._cycle)
        if behaviour in ("http_500", "http_400"):
            status = int(behaviour[-3:])
            err = {"object": "error", "message": f"test server says {status}", "type": "TestError", "code": status}
            return web.json_response({"error": err}, status=status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if behaviour == "stall":
            await asyncio.sleep(self.config.stall_s)
            return resp
        msgs = _Messages(body, chat, self.config.tokens_per_message, self.config.default_max_tokens)
        head = msgs.role() if chat else b""
        if self.config.zero_delay and behaviour == "ok":
            await resp.write(head + b"".join(msgs.output(k) for k in range(msgs.n_messages)) + msgs.tail())
            self.written.append((perf_counter_ns(), msgs.max_tokens))
            await resp.write_eof()
            return resp
        if head:
            await resp.write(head)
        key = _prompt_key(body, chat) if self.config.record_first_writes else None
        return await self._stream(request, resp, msgs, behaviour, t0, loop, (key, start_ns))

    async def _stream(self, request: web.Request, resp: web.StreamResponse, msgs: _Messages, behaviour: str,
                      t0: float, loop: asyncio.AbstractEventLoop,
                      first: tuple[str | None, int] = (None, 0)) -> web.StreamResponse:
        cfg = self.config
        if cfg.keepalive:
            await resp.write(b": ping\n\n")
        n = 1 if behaviour in ("stream_error",) else 0 if behaviour == "empty" else msgs.n_messages
        for k in range(n):
            await _sleep_until(loop, t0 + cfg.ttft_s + k * cfg.gap_s, cfg.spin_s)
            if behaviour == "cut" and k == cfg.cut_after:
                await resp.write(msgs.output(k)[:20])
                request.transport.close()
                return resp
            out = msgs.output(k)
            await resp.write(out[:-2] if behaviour == "no_done" and k == n - 1 else out)
            self.written.append((perf_counter_ns(), msgs.tokens_in(k)))
            if k == 0 and first[0] is not None:
                self.first_writes[first[0]] = (first[1], self.written[-1][0])
        if behaviour == "no_done":
            await resp.write_eof()
            return resp
        if behaviour == "stream_error":
            await resp.write(_sse({"error": {"object": "error", "message": "engine died", "code": 500}}))
        await resp.write(msgs.tail(cfg.send_usage))
        await resp.write_eof()
        return resp


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float, spin_s: float) -> None:
    """Sleeps with asyncio until ``deadline`` (loop time; absolute, so overshoot never adds up)."""
    delay = deadline - loop.time()
    if delay > spin_s:
        await asyncio.sleep(delay - spin_s)
    while loop.time() < deadline:
        await asyncio.sleep(0)


def _prompt_key(body: dict[str, Any], chat: bool) -> str:
    if chat:
        return " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    return str(body.get("prompt", ""))


def precise_loop() -> asyncio.AbstractEventLoop:
    """An event loop with microsecond timers. The default epoll loop rounds every wait up to a
    whole millisecond, so its sleeps end up to 1 ms late; select() takes microseconds (and is
    limited to about 1000 sockets, plenty for a test server)."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


class _Messages:
    """The bytes of one response's SSE messages (vLLM's shapes)."""

    def __init__(self, body: dict[str, Any], chat: bool, per_message: int, default_max_tokens: int) -> None:
        self.chat = chat
        self.model = body.get("model", "stream-test")
        self.max_tokens = int(body.get("max_tokens") or default_max_tokens)
        self.per_message = per_message
        self.n_messages = max(1, math.ceil(self.max_tokens / self.per_message))
        if chat:
            text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        else:
            text = str(body.get("prompt", ""))
        self.prompt_tokens = len(text.split())
        self.base = {"id": "cmpl-test", "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": 1700000000, "model": self.model}

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        return _sse({**self.base, "choices": [{"index": 0, **choice}]})

    def role(self) -> bytes:
        return self._chunk({"delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None})

    def tokens_in(self, k: int) -> int:
        return min(self.per_message, self.max_tokens - k * self.per_message)

    def output(self, k: int) -> bytes:
        text = " tok" * self.tokens_in(k)
        finish = "length" if k == self.n_messages - 1 else None
        if self.chat:
            return self._chunk({"delta": {"content": text}, "logprobs": None, "finish_reason": finish})
        return self._chunk({"text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None})

    def tail(self, usage: bool = True) -> bytes:
        out = b""
        if usage:
            u = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.max_tokens,
                 "total_tokens": self.prompt_tokens + self.max_tokens}
            out = _sse({**self.base, "choices": [], "usage": u})
        return out + b"data: [DONE]\n\n"


@contextlib.contextmanager
def serve_in_thread(config: StreamServerConfig | None = None) -> Iterator[StreamServer]:
    """Runs a server on its own event loop in a daemon thread; yields the server (``.url``)."""
    server = StreamServer(config)
    loop = precise_loop()
    ready = threading.Event()

    def target() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=target, name="stream-server", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("stream server did not start within 10 s")
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _cli_args(config: StreamServerConfig, port: int) -> list[str]:
    return ["--port", str(port), "--ttft-ms", repr(config.ttft_s * 1e3), "--gap-ms", repr(config.gap_s * 1e3),
            "--tokens-per-message", str(config.tokens_per_message), "--behaviours", ",".join(config.behaviours),
            "--spin-ms", repr(config.spin_s * 1e3), "--stall-s", repr(config.stall_s),
            "--cut-after", str(config.cut_after)] + (["--record-first-writes"] if config.record_first_writes else [])


@contextlib.contextmanager
def serve_in_process(config: StreamServerConfig | None = None, port: int | None = None,
                     startup_timeout_s: float = 20.0, epoll: bool = False) -> Iterator[str]:
    """Runs a server in a separate Python process (its own loop and GIL); yields its base URL.
    ``epoll``: the default event loop, for more than ~1000 connections (see ``main``)."""
    config = config or StreamServerConfig()
    if port is None:
        port = free_port()
    cmd = [sys.executable, "-m", "tests.support.stream_server", *_cli_args(config, port), *(["--epoll"] if epoll else [])]
    with server_process(cmd, port, startup_timeout_s) as url:
        yield url


@contextlib.contextmanager
def server_process(cmd: list[str], port: int, startup_timeout_s: float = 20.0) -> Iterator[str]:
    """Runs ``cmd`` (a server listening on 127.0.0.1:``port``) from the repository root until its
    ``/health`` answers; yields its base URL and stops it afterwards."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, startup_timeout_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stream server exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"stream server at {url} not ready within {timeout_s} s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--gap-ms", type=float, default=10.0)
    p.add_argument("--tokens-per-message", type=int, default=1)
    p.add_argument("--behaviours", default="ok", help=f"comma-separated, cycled per request: {', '.join(BEHAVIOURS)}")
    p.add_argument("--spin-ms", type=float, default=StreamServerConfig.spin_s * 1e3)
    p.add_argument("--stall-s", type=float, default=StreamServerConfig.stall_s)
    p.add_argument("--cut-after", type=int, default=StreamServerConfig.cut_after)
    p.add_argument("--record-first-writes", action="store_true", help="serve GET /first_writes")
    p.add_argument("--epoll", action="store_true", help="the default event loop (select() takes ~1000 sockets at most; "
                   "epoll timers wake up to 1 ms late)")
    a = p.parse_args(argv)
    config = StreamServerConfig(ttft_s=a.ttft_ms / 1e3, gap_s=a.gap_ms / 1e3, tokens_per_message=a.tokens_per_message,
                                behaviours=tuple(a.behaviours.split(",")), spin_s=a.spin_ms / 1e3,
                                stall_s=a.stall_s, cut_after=a.cut_after, record_first_writes=a.record_first_writes)
    loop = asyncio.new_event_loop() if a.epoll else precise_loop()
    web.run_app(StreamServer(config).app(), host="127.0.0.1", port=a.port, access_log=None, print=None,
                handler_cancellation=True, shutdown_timeout=1.0, backlog=4096, loop=loop)


if __name__ == "__main__":
    main()
