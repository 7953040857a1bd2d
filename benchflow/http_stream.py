"""The load generator's HTTP/1.1 client: one ``asyncio.Protocol`` per keep-alive connection, the
response parsed by ``httptools`` (llhttp, the C parser uvicorn uses), the body handed to the
caller's sink in the same callback that read it from the socket.

Why not aiohttp for the measured requests: a request through an aiohttp session costs the client
about 230 µs of CPU (connector, request and response objects, a stream reader that wakes a
coroutine per read), and at concurrency 256 the slots of a closed loop that finish together send
together, so that cost queues up in front of the next request's TTFT (bench/client_ttft.py). Here a
request is one pre-built ``bytes`` written to an idle connection, and each read is timestamped and
parsed where it arrives, with no task switch in between.

What it does, and no more: ``http://`` and ``https://`` (TLS through :mod:`ssl`), credentials in
the URL (``http://user:password@host``) sent as Basic auth, keep-alive
connection reuse, ``Content-Length``, chunked and read-until-close bodies, one request at a time per
connection. A pooled connection the server had closed while idle (a keep-alive timeout) is
retried once on a new connection when nothing of the answer came back. Errors are exceptions the
caller classifies: :class:`ConnectError` (no connection), :class:`StreamCut` (the connection broke or
closed before the answer was complete), :class:`BadResponse` (not HTTP), and ``TimeoutError`` from
:meth:`Pool.exchange`'s deadline.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import httptools

__all__ = ["Pool", "Sink", "HttpError", "ConnectError", "StreamCut", "BadResponse"]


class HttpError(Exception):
    """A request that got no complete HTTP answer."""


class ConnectError(HttpError):
    """No connection could be opened; ``os_error`` is the cause (refused, unreachable, DNS)."""

    def __init__(self, message: str, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.os_error = os_error


class StreamCut(HttpError):
    """The connection broke or was closed before the answer was complete."""


class BadResponse(HttpError):
    """The server's bytes are not a valid HTTP/1.1 response."""


class Sink:
    """What one exchange's answer is handed to; the load generator subclasses it. Called in the
    event loop, from the protocol's ``data_received``: keep each call short."""

    def head(self, status: int, reason: str) -> None:
        """The status line and headers were read (``reason``: the status line's text)."""

    def body(self, data: bytes, t_ns: int) -> bool | None:
        """A part of the (de-chunked) body, read from the socket at ``t_ns`` (``perf_counter_ns``).
        Returning True ends the exchange there (the rest of the answer is not read; the connection
        is dropped)."""
        return None


class _Exchange:
    __slots__ = ("sink", "done", "status", "got_bytes", "length_known", "complete")

    def __init__(self, sink: Sink, done: asyncio.Future[None]) -> None:
        self.sink = sink
        self.done = done
        self.status: int | None = None
        self.got_bytes = False
        self.length_known = False  # Content-Length or chunked: the end is in the bytes, not the close
        self.complete = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``exchange`` sends a request and routes its answer to a sink."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: _Exchange | None = None
        self.closed = False
        self.reused = False
        self.t_ns = 0
        self._reason = ""
        self._callback_error: BaseException | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        ex = self.current
        if ex is None:  # bytes nobody asked for: this connection can no longer be trusted
            self._close()
            return
        ex.got_bytes = True
        self.t_ns = self.pool.clock()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            # httptools turns whatever a callback raised into this error: raise the callback's own
            # exception instead, so that a stop signal raised as an exception while a read is parsed
            # (Prefect's SIGTERM, Ctrl-C) stops the run instead of failing one request as a bad answer
            error, self._callback_error = self._callback_error, None
            if error is None:
                raise
            raise error from None
        except httptools.HttpParserUpgrade:
            self._fail(ex, BadResponse("the server switched protocols"))
        except httptools.HttpParserError as e:
            self._fail(ex, BadResponse(f"not a valid HTTP response ({' '.join(str(e).split())})"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost says what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        ex = self.current
        if ex is None or ex.done.done():
            return
        if ex.status is not None and not ex.length_known and exc is None:
            self.on_message_complete()  # a body that ends with the connection
            return
        if exc is None:
            what = "server disconnected"
        elif isinstance(exc, OSError) and exc.strerror:
            what = exc.strerror.lower()  # "connection reset by peer"
        else:
            what = f"connection lost ({type(exc).__name__}: {' '.join(str(exc).split())})"
        where = "before answering" if ex.status is None else "before the answer was complete"
        self._fail(ex, StreamCut(f"{what} {where}"))

    # -- httptools callbacks ------------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self._reason = status.decode("latin-1", "replace")

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if self.current is not None and (
                n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in value.lower())):
            self.current.length_known = True

    def on_headers_complete(self) -> None:
        ex = self.current
        if ex is not None:
            ex.status = self.parser.get_status_code()
            try:
                ex.sink.head(ex.status, self._reason)
            except BaseException as e:  # noqa: BLE001 - kept for data_received (httptools wraps it)
                self._callback_error = e
                raise

    def on_body(self, body: bytes) -> None:
        ex = self.current
        try:
            enough = ex is not None and ex.sink.body(body, self.t_ns)
        except BaseException as e:  # noqa: BLE001 - kept for data_received (httptools wraps it)
            self._callback_error = e
            raise
        if enough:  # the sink has what it needs
            ex.complete = True
            self.abort()
            if not ex.done.done():
                ex.done.set_result(None)

    def on_message_complete(self) -> None:
        ex = self.current
        if ex is None or ex.complete:
            return
        ex.complete = True
        self.current = None
        keep = ex.length_known and self.parser.should_keep_alive() and not self.closed
        if keep:
            self.reused = True
            self.pool.release(self)
        else:
            self._close()
        if not ex.done.done():
            ex.done.set_result(None)

    # -- used by Pool -------------------------------------------------------------------------
    def start(self, request: bytes, sink: Sink) -> _Exchange:
        ex = _Exchange(sink, self.pool.loop.create_future())
        self.current = ex
        self._reason = ""
        self.transport.write(request)  # type: ignore[union-attr]
        return ex

    def _fail(self, ex: _Exchange, error: BaseException) -> None:
        self.current = None
        self._close()
        if not ex.done.done():
            ex.done.set_exception(error)

    def _close(self) -> None:
        self.pool.forget(self)
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    def abort(self) -> None:
        """Drops the connection (a cancelled or timed-out exchange: its answer is not read)."""
        self.current = None
        self._close()


class Pool:
    """Keep-alive connections to one origin, for requests to one URL. ``clock``: the time stamp of
    each read (``time.perf_counter_ns``)."""

    def __init__(self, url: str, clock: Callable[[], int], *, headers: dict[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in URL {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = self.port == (443 if self.ssl else 80)
        common = [f"Host: {host}" + ("" if default_port else f":{self.port}"), "User-Agent: benchflow",
                  "Connection: keep-alive"]
        if parts.username is not None or parts.password is not None:  # http://user:password@host: Basic auth
            token = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
            common.append("Authorization: Basic " + base64.b64encode(token).decode())
        self._common = "\r\n".join(common)  # the header lines of every request, the warm-up's GETs too
        lines = [f"POST {target} HTTP/1.1", self._common, *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()

    def request(self, body: bytes) -> bytes:
        """The whole request (head and body) for ``body``; build it once and send it many times."""
        return self._head + b"%d\r\n\r\n" % len(body) + body

    def forget(self, conn: _Connection) -> None:
        self.open.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def release(self, conn: _Connection) -> None:
        self.idle.append(conn)

    async def connect(self) -> _Connection:
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port,
                                                        ssl=self.ssl)
        except OSError as e:
            raise ConnectError(f"cannot connect to {self.host}:{self.port} ({type(e).__name__}: "
                               f"{' '.join(str(e).split())})", e) from e
        self.open.add(conn)
        return conn

    async def exchange(self, request: bytes, sink: Sink, timeout_s: float | None = None) -> None:
        """Sends ``request`` (from :meth:`request`) and feeds its answer to ``sink`` until it is
        complete. Raises :class:`HttpError` subclasses, or ``TimeoutError`` when the whole exchange
        (connecting included) takes longer than ``timeout_s``; a cancelled exchange drops its
        connection."""
        if timeout_s is None:
            await self._exchange(request, sink)
            return
        async with asyncio.timeout(timeout_s):
            await self._exchange(request, sink)

    async def _exchange(self, request: bytes, sink: Sink) -> None:
        conn = self.idle.pop() if self.idle else await self.connect()
        while True:
            ex = conn.start(request, sink)
            try:
                await ex.done
                return
            except StreamCut:
                if not (conn.reused and not ex.got_bytes):
                    raise
                conn = await self.connect()  # a keep-alive connection the server had closed: once more
            except BaseException:
                conn.abort()
                raise

    async def warm(self, n: int, path: str = "/v1/models", timeout_s: float = 2.0) -> None:
        """Opens up to ``n`` keep-alive connections with a ``GET path`` each; a failure only leaves
        fewer open (the requests themselves will say what is wrong)."""
        get = f"GET {path} HTTP/1.1\r\n{self._common}\r\n\r\n".encode("latin-1")

        async def one() -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    conn = await self.connect()
                    await conn.start(get, Sink()).done
            except Exception:  # noqa: BLE001 - a cold connection is no error
                pass

        await asyncio.gather(*(one() for _ in range(n)))

    def close(self) -> None:
        for conn in list(self.open | set(self.idle)):
            conn.abort()
        self.idle.clear()
        self.open.clear()
