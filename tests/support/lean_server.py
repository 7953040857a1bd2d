"""A lean streaming OpenAI-compatible server for the load-generator benchmarks (bench/clients.py,
bench/client_ttft.py): the same responses as tests/support/stream_server.py (its ``_Messages``, vLLM's
shapes), but served by a bare epoll loop on non-blocking sockets instead of aiohttp.web or asyncio.

Why a second server: a benchmark of the *client* needs a server that is not the bottleneck. On a
2-core machine the server shares the cores with the client processes, so every microsecond it spends
per request or per token is taken from the clients being measured. This one does the least work a
correct answer needs: find the end of the head, read ``Content-Length`` bytes, and write precomputed
bytes. Zero delay: one cached write per request, looked up by the request body's bytes (no JSON parsing
once a body has been seen). Paced: one write per message on an absolute schedule, ``t0 + ttft + k * gap``,
from two FIFO timer queues, with chunked transfer encoding; every message's bytes are built once per answer shape.
Keep-alive, one request at a time per connection (what HTTP clients do; no pipelining).

Only behaviour ``ok``; the fault behaviours stay with stream_server.py. Like it, the server can keep, per
prompt, when its handler started and when its first output was written (``perf_counter_ns``: one clock
for every process on Linux), served at ``GET /first_writes``.

    python -m tests.support.lean_server --port P [--ttft-ms 0 --gap-ms 0] [--record-first-writes]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from time import perf_counter_ns
from typing import Any

from benchflow.launch.process import free_port
from tests.support.stream_server import StreamServerConfig, _Messages, _prompt_key, server_process

#: Whole zero-delay answers kept by request body (the benchmarks send a few hundred distinct prompts).
_BODY_CACHE = 10_000

_REASONS = {200: b"OK", 404: b"Not Found", 400: b"Bad Request"}


def _response(status: int, body: bytes, content_type: bytes) -> bytes:
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (status, _REASONS.get(status, b"OK"), content_type, len(body))) + body


_STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
_CHUNKED_HEAD = _STREAM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class LeanServer:
    """The request handling: ``handle`` is called once per complete request and answers through
    ``conn.write`` (zero delay) or schedules a paced stream on the loop."""

    def __init__(self, config: StreamServerConfig, loop: _Loop) -> None:
        if set(config.behaviours) != {"ok"}:
            raise ValueError("the lean server serves behaviour 'ok' only; use stream_server.py for faults")
        self.config = config
        self.loop = loop
        self.first_writes: dict[str, tuple[int, int]] = {}
        self._by_shape: dict[tuple[Any, ...], tuple[bytes, list[bytes]]] = {}
        self._by_body: dict[bytes, bytes] = {}

    def handle(self, conn: _Connection, method: bytes, path: bytes, body: bytes) -> None:
        start_ns = perf_counter_ns()
        if method == b"POST" and path in (b"/v1/completions", b"/v1/chat/completions"):
            self._completion(conn, body, path == b"/v1/chat/completions", start_ns)
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

    def _completion(self, conn: _Connection, raw: bytes, chat: bool, start_ns: int) -> None:
        cfg = self.config
        if cfg.zero_delay and not cfg.record_first_writes:
            whole = self._by_body.get(raw)  # the same body, the same bytes: no JSON parsing on a hit
            if whole is None:
                first, parts = self._parts(json.loads(raw), chat)
                payload = first + b"".join(parts)
                whole = (_STREAM_HEAD + b"Content-Length: %d\r\n\r\n" % len(payload)) + payload
                if len(self._by_body) < _BODY_CACHE:
                    self._by_body[raw] = whole
            conn.write(whole)
            return
        body = json.loads(raw)
        text = _prompt_key(body, chat)
        head, parts = self._parts(body, chat, text, framed=True)
        conn.write(head)
        key = text if cfg.record_first_writes else None
        self.loop.schedule(self.loop.now() + cfg.ttft_s, _Stream(self, conn, parts, key, start_ns))

    def _parts(self, body: dict[str, Any], chat: bool, text: str | None = None,
               framed: bool = False) -> tuple[bytes, list[bytes]]:
        """What is written at once (the role message of a chat answer), then one message per output step
        with the tail after the last: built once per answer shape. ``framed``: as chunked-encoding chunks,
        the head and the last chunk included; else the bare bytes."""
        text = _prompt_key(body, chat) if text is None else text
        shape = (framed, chat, body.get("model"), body.get("max_tokens"), len(text.split()))
        built = self._by_shape.get(shape)
        if built is None:
            cfg = self.config
            msgs = _Messages(body, chat, cfg.tokens_per_message, cfg.default_max_tokens)
            first = msgs.role() if chat else b""
            parts = [msgs.output(k) for k in range(msgs.n_messages)]
            parts[-1] += msgs.tail(cfg.send_usage)
            if framed:
                first = _CHUNKED_HEAD + (_chunk(first) if first else b"")
                parts = [_chunk(p) for p in parts]
                parts[-1] += b"0\r\n\r\n"
            built = self._by_shape[shape] = (first, parts)
        return built


class _Stream:
    """One paced answer: message ``k`` at ``t0 + ttft + k * gap``, the tail with the last one. ``parts`` is
    shared by every answer of the same shape (never changed)."""

    __slots__ = ("server", "conn", "parts", "key", "start_ns", "k")

    def __init__(self, server: LeanServer, conn: _Connection, parts: list[bytes], key: str | None,
                 start_ns: int) -> None:
        self.server, self.conn, self.parts, self.key, self.start_ns = server, conn, parts, key, start_ns
        self.k = 0

    def fire(self, due: float) -> None:
        if self.conn.closed:
            return
        k = self.k
        self.conn.write(self.parts[k])  # the last one carries the tail and the end of the body
        if k == 0 and self.key is not None:
            self.server.first_writes[self.key] = (self.start_ns, perf_counter_ns())
        self.k = k = k + 1
        if k < len(self.parts):
            self.server.loop.schedule_next(due + self.server.config.gap_s, self)


class _Connection:
    """HTTP/1.1 keep-alive on a non-blocking socket: a head up to a blank line, then ``Content-Length``
    bytes of body; what the kernel does not take at once waits in ``out`` for the socket to drain."""

    __slots__ = ("sock", "fd", "loop", "buf", "out", "closed")

    def __init__(self, sock: socket.socket, loop: _Loop) -> None:
        self.sock, self.fd, self.loop = sock, sock.fileno(), loop
        self.buf = b""
        self.out = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.out = data[sent:]
            self.loop.want_write(self, True)

    def drain(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.loop.want_write(self, False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.forget(self)
            self.sock.close()

    def readable(self, server: LeanServer) -> None:
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.buf += data
        while not self.closed:
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
                self.close()
                return
            server.handle(self, line[0], line[1].split(b"?", 1)[0], body)


class _Loop:
    """One thread, one epoll, two timer queues: the least a server needs per read and per write (no
    callback handles, futures or tasks). Every answer has the same ``ttft`` and ``gap``, so first
    messages fall due in the order their requests came, and every later message ``gap`` after the one
    before it, in the order those were written: two FIFO queues hold the schedule in order, without a
    heap."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.conns: dict[int, _Connection] = {}
        self.firsts: deque[tuple[float, _Stream]] = deque()
        self.nexts: deque[tuple[float, _Stream]] = deque()
        self.now = time.perf_counter

    def schedule(self, due: float, stream: _Stream) -> None:
        """A first message (in the order the requests came)."""
        self.firsts.append((due, stream))

    def schedule_next(self, due: float, stream: _Stream) -> None:
        """A later message: ``gap`` after the one just written, so never before the last one queued."""
        self.nexts.append((due, stream))

    def _earliest(self) -> deque[tuple[float, _Stream]] | None:
        """The queue whose next message falls due first (None: nothing scheduled)."""
        firsts, nexts = self.firsts, self.nexts
        if firsts and (not nexts or firsts[0][0] <= nexts[0][0]):
            return firsts
        return nexts or None

    def want_write(self, conn: _Connection, on: bool) -> None:
        self.epoll.modify(conn.fd, select.EPOLLIN | (select.EPOLLOUT if on else 0))

    def forget(self, conn: _Connection) -> None:
        self.conns.pop(conn.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(conn.fd)

    def serve(self, server: LeanServer, listener: socket.socket) -> None:
        listener.setblocking(False)
        lfd = listener.fileno()
        self.epoll.register(lfd, select.EPOLLIN)
        conns, now, earliest = self.conns, self.now, self._earliest
        epfd = self.epoll.fileno()
        while True:
            # Paced writes on time: epoll rounds a wait up to whole milliseconds, which would make each
            # write up to 1 ms late and send a millisecond's worth of them to the clients in one burst, where
            # they queue (at c256 that doubled the client-added p50). So epoll wakes up to 1 ms early, and the
            # last part of a wait is a select() on the epoll descriptor itself, which takes microseconds.
            queue = earliest()
            timeout = -1.0 if queue is None else max(0.0, queue[0][0] - now())
            if 0.0 < timeout < 0.002:
                select.select([epfd], [], [], timeout)  # returns early when a socket is ready
                timeout = 0.0
            elif timeout >= 0.002:
                timeout -= 0.001
            for fd, mask in self.epoll.poll(timeout):
                if fd == lfd:
                    self._accept(listener)
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                if mask & select.EPOLLOUT:
                    conn.drain()
                if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    conn.readable(server)
            t = now()
            while (queue := earliest()) is not None and queue[0][0] <= t:
                due, stream = queue.popleft()
                stream.fire(due)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, self)
            self.conns[conn.fd] = conn
            self.epoll.register(conn.fd, select.EPOLLIN)


def serve(config: StreamServerConfig, port: int) -> None:
    loop = _Loop()
    server = LeanServer(config, loop)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    loop.serve(server, listener)


@contextlib.contextmanager
def serve_lean_in_process(config: StreamServerConfig | None = None, port: int | None = None,
                          startup_timeout_s: float = 20.0) -> Iterator[str]:
    """Runs the lean server in a separate Python process; yields its base URL."""
    config = config or StreamServerConfig()
    port = free_port() if port is None else port
    cmd = [sys.executable, "-m", "tests.support.lean_server", "--port", str(port), "--ttft-ms",
           repr(config.ttft_s * 1e3), "--gap-ms", repr(config.gap_s * 1e3), "--tokens-per-message",
           str(config.tokens_per_message), *(["--record-first-writes"] if config.record_first_writes else [])]
    with server_process(cmd, port, startup_timeout_s) as url:
        yield url


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--gap-ms", type=float, default=0.0)
    p.add_argument("--tokens-per-message", type=int, default=1)
    p.add_argument("--record-first-writes", action="store_true", help="serve GET /first_writes")
    a = p.parse_args(argv)
    config = StreamServerConfig(ttft_s=a.ttft_ms / 1e3, gap_s=a.gap_ms / 1e3, tokens_per_message=a.tokens_per_message,
                                record_first_writes=a.record_first_writes)
    with contextlib.suppress(KeyboardInterrupt):
        serve(config, a.port)


if __name__ == "__main__":
    main()
