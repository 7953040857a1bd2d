"""A lean streaming OpenAI-compatible server for the load-generator benchmarks (bench/clients.py,
bench/client_ttft.py): the same responses as tests/support/stream_server.py (its ``_Messages``, vLLM's
shapes), but served by a bare ``asyncio.Protocol`` HTTP/1.1 parser instead of aiohttp.web.

Why a second server: a benchmark of the *client* needs a server that is not the bottleneck. On a
2-core machine the aiohttp server costs about as much CPU per request as benchflow's client, so with
two client processes the server, not the clients, limits the rate. This one does the least work a
correct answer needs: find the end of the head, read ``Content-Length`` bytes, ``json.loads`` the body,
and write precomputed bytes (zero delay: one cached write per request; paced: one write per message on
an absolute schedule, ``t0 + ttft + k * gap``, with chunked transfer encoding). Keep-alive, one request at
a time per connection (what HTTP clients do; no pipelining).

Only behaviour ``ok``; the fault behaviours stay with stream_server.py. Like it, the server can keep, per
prompt, when its handler started and when its first output was written (``perf_counter_ns``: one clock
for every process on Linux), served at ``GET /first_writes``.

    python -m tests.support.lean_server --port P [--ttft-ms 0 --gap-ms 0] [--record-first-writes] [--epoll]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from time import perf_counter_ns
from typing import Any

from benchflow.launch.process import free_port
from tests.support.stream_server import StreamServerConfig, _Messages, _prompt_key, precise_loop, server_process

_REASONS = {200: b"OK", 404: b"Not Found", 400: b"Bad Request"}


def _response(status: int, body: bytes, content_type: bytes) -> bytes:
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (status, _REASONS.get(status, b"OK"), content_type, len(body))) + body


_STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
_CHUNKED_HEAD = _STREAM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class LeanServer:
    """Serves on ``loop``; ``handle`` is called once per complete request."""

    def __init__(self, config: StreamServerConfig) -> None:
        if set(config.behaviours) != {"ok"}:
            raise ValueError("the lean server serves behaviour 'ok' only; use stream_server.py for faults")
        self.config = config
        self.first_writes: dict[str, tuple[int, int]] = {}
        self._cache: dict[tuple[Any, ...], bytes] = {}

    def handle(self, conn: _Connection, method: bytes, path: bytes, body: bytes) -> None:
        start_ns = perf_counter_ns()
        if method == b"POST" and path in (b"/v1/completions", b"/v1/chat/completions"):
            self._completion(conn, json.loads(body), path == b"/v1/chat/completions", start_ns)
        elif path == b"/health":
            conn.write(_response(200, b"ok", b"text/plain"))
        elif path == b"/v1/models":
            conn.write(_response(200, b'{"object":"list","data":[{"id":"stream-test","object":"model"}]}',
                                 b"application/json"))
        elif path == b"/first_writes":
            conn.write(_response(200, json.dumps({k: list(v) for k, v in self.first_writes.items()}).encode(),
                                 b"application/json"))
        else:
            conn.write(_response(404, b'{"error":"not found"}', b"application/json"))

    def _completion(self, conn: _Connection, body: dict[str, Any], chat: bool, start_ns: int) -> None:
        cfg = self.config
        if cfg.zero_delay and not cfg.record_first_writes:
            conn.write(self._whole(body, chat))
            return
        msgs = _Messages(body, chat, cfg.tokens_per_message, cfg.default_max_tokens)
        key = _prompt_key(body, chat) if cfg.record_first_writes else None
        conn.write(_CHUNKED_HEAD + (_chunk(msgs.role()) if chat else b""))
        _Stream(self, conn, msgs, key, start_ns).start()

    def _whole(self, body: dict[str, Any], chat: bool) -> bytes:
        """The whole zero-delay answer, cached by what its bytes depend on."""
        text = _prompt_key(body, chat)
        key = (chat, body.get("model"), body.get("max_tokens"), len(text.split()))
        cached = self._cache.get(key)
        if cached is None:
            msgs = _Messages(body, chat, self.config.tokens_per_message, self.config.default_max_tokens)
            payload = (msgs.role() if chat else b"") + b"".join(msgs.output(k) for k in range(msgs.n_messages))
            payload += msgs.tail(self.config.send_usage)
            cached = self._cache[key] = (_STREAM_HEAD + b"Content-Length: %d\r\n\r\n" % len(payload)) + payload
        return cached


class _Stream:
    """One paced answer: message ``k`` at ``t0 + ttft + k * gap`` (loop time), then the tail."""

    def __init__(self, server: LeanServer, conn: _Connection, msgs: _Messages, key: str | None, start_ns: int) -> None:
        self.server, self.conn, self.msgs, self.key, self.start_ns = server, conn, msgs, key, start_ns
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.k = 0

    def start(self) -> None:
        self.loop.call_at(self.t0 + self.server.config.ttft_s, self._next)

    def _next(self) -> None:
        if self.conn.closed:
            return
        cfg, msgs = self.server.config, self.msgs
        self.conn.write(_chunk(msgs.output(self.k)))
        if self.k == 0 and self.key is not None:
            self.server.first_writes[self.key] = (self.start_ns, perf_counter_ns())
        self.k += 1
        if self.k < msgs.n_messages:
            self.loop.call_at(self.t0 + cfg.ttft_s + self.k * cfg.gap_s, self._next)
        else:
            self.conn.write(_chunk(msgs.tail(cfg.send_usage)) + b"0\r\n\r\n")


class _Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive: a head up to a blank line, then ``Content-Length`` bytes of body."""

    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            at = head.lower().find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body, self.buf = self.buf[end + 4:total], self.buf[total:]
            line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(line) < 2:
                self.write(_response(400, b"bad request line", b"text/plain"))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.server.handle(self, line[0], line[1].split(b"?", 1)[0], body)


async def serve(config: StreamServerConfig, port: int) -> None:
    server = LeanServer(config)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _Connection(server), "127.0.0.1", port, backlog=4096)
    async with srv:
        await srv.serve_forever()


@contextlib.contextmanager
def serve_lean_in_process(config: StreamServerConfig | None = None, port: int | None = None,
                          startup_timeout_s: float = 20.0, epoll: bool = False) -> Iterator[str]:
    """Runs the lean server in a separate Python process; yields its base URL. ``epoll``: the default
    event loop (more than ~1000 connections; its timers wake up to 1 ms late), else a select() loop
    for a paced server (microsecond timers); a zero-delay server always runs on epoll."""
    config = config or StreamServerConfig()
    port = free_port() if port is None else port
    cmd = [sys.executable, "-m", "tests.support.lean_server", "--port", str(port), "--ttft-ms",
           repr(config.ttft_s * 1e3), "--gap-ms", repr(config.gap_s * 1e3), "--tokens-per-message",
           str(config.tokens_per_message), *(["--record-first-writes"] if config.record_first_writes else []),
           *(["--epoll"] if epoll else [])]
    with server_process(cmd, port, startup_timeout_s) as url:
        yield url


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--gap-ms", type=float, default=0.0)
    p.add_argument("--tokens-per-message", type=int, default=1)
    p.add_argument("--record-first-writes", action="store_true", help="serve GET /first_writes")
    p.add_argument("--epoll", action="store_true", help="the default event loop instead of select()")
    a = p.parse_args(argv)
    config = StreamServerConfig(ttft_s=a.ttft_ms / 1e3, gap_s=a.gap_ms / 1e3, tokens_per_message=a.tokens_per_message,
                                record_first_writes=a.record_first_writes)
    # zero delay needs no precise timers, and select() walks every socket on each turn of the loop
    loop = asyncio.new_event_loop() if a.epoll or config.zero_delay else precise_loop()
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_until_complete(serve(config, a.port))


if __name__ == "__main__":
    main()
