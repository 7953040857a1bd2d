"""One streaming request sent and its answer recorded: what the load generator (:mod:`benchflow.loadgen`)
and the agentic workload (:mod:`benchflow.agentic`) share. A pool of keep-alive connections per run
(:func:`open_pool`, :mod:`benchflow.http_stream`), and :func:`exchange_into`, which sends one pre-built
request and fills its :class:`~benchflow.records.RequestRecord`: status, chunks and usage as they are
read, or the error class and message. Imports no spec (the spec imports the agentic workload)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import aiohttp

from benchflow.errors import SpecError
from benchflow.http_stream import ConnectError, HttpError, Pool, Sink
from benchflow.sse import ERROR_MESSAGE_CHARS, StreamRecorder

if TYPE_CHECKING:
    from benchflow.records import RequestRecord

__all__ = ["api_root", "open_pool", "exchange_into", "connect_reason", "one_line"]

logger = logging.getLogger("benchflow.loadgen")

_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
_ERROR_BODY_CHARS = ERROR_MESSAGE_CHARS
_ERROR_BODY_LIMIT = 4 * _ERROR_BODY_CHARS  # bytes of an error answer's body read for its message


def api_root(base_url: str) -> str:
    """``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` all give
    ``http://host:8000`` (the API paths are appended to it)."""
    root = base_url.strip().rstrip("/")
    return root[:-3] if root.endswith("/v1") else root


class _Answer(Sink):
    """Turns one answer into its request's record as it is read: a 2xx stream through
    :class:`~benchflow.sse.StreamRecorder` (each read timestamped where it arrived), an error
    answer's body kept (its first :data:`_ERROR_BODY_LIMIT` bytes) for its message."""

    __slots__ = ("rec", "client", "max_tokens", "stream", "error_body", "reason")

    def __init__(self, rec: RequestRecord, client: Any, max_tokens: int | None) -> None:
        self.rec, self.client, self.max_tokens = rec, client, max_tokens
        self.stream: StreamRecorder | None = None
        self.error_body = b""
        self.reason = ""

    def head(self, status: int, reason: str) -> None:
        self.rec.status = status
        if 200 <= status < 300:
            self.stream = StreamRecorder(self.rec, max_tokens=self.max_tokens)
        else:
            self.reason = reason

    def body(self, data: bytes, t_ns: int) -> bool:
        stream = self.stream
        if stream is None:
            self.error_body += data[:_ERROR_BODY_LIMIT - len(self.error_body)]
            return len(self.error_body) >= _ERROR_BODY_LIMIT  # enough to say what went wrong
        chunks = self.rec.chunks
        n = len(chunks)
        stream.feed(data, t_ns)
        client = self.client
        if len(chunks) != n and client is not None:
            client.last_token_ns = t_ns
            if n == 0:
                client.first_token(self.rec, chunks[0][0])
        return False

    def finish(self) -> None:
        """The answer is complete: classifies it."""
        rec = self.rec
        rec.end_ns = perf_counter_ns()
        if self.stream is not None:
            self.stream.close(rec.end_ns)
        else:
            self.error_answer()

    def error_answer(self) -> None:
        rec = self.rec
        rec.error_class = "http_5xx" if rec.status >= 500 else "http_4xx" if rec.status >= 400 else "no_output"
        text = self.error_body.decode("utf-8", "replace").strip()
        rec.error_message = (text or f"HTTP {rec.status} {self.reason}".strip())[:_ERROR_BODY_CHARS]


@contextlib.asynccontextmanager
async def open_pool(url: str) -> AsyncIterator[Pool]:
    """The keep-alive connections of one run's requests to ``url``, closed when the run ends.
    An invalid URL raises :class:`SpecError`."""
    try:
        pool = Pool(url, perf_counter_ns, headers=_HEADERS)
    except ValueError as e:
        raise SpecError([f"base_url: {e}"]) from e
    try:
        yield pool
    finally:
        pool.close()


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 200 characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


async def exchange_into(pool: Pool, request: bytes, rec: RequestRecord, max_tokens: int | None, timeout_s: float,
                        client: Any = None) -> None:
    """Sends one request (``request``: from :meth:`Pool.request`) and records its answer in ``rec``:
    status, chunks and usage, or the error class and message. A failed request is recorded, never
    raised; a cancel marks it ``incomplete`` and is raised. ``client``: told of output tokens (the
    stall watchdog and the saturation detector read them)."""
    answer = _Answer(rec, client, max_tokens)
    try:
        await pool.exchange(request, answer, timeout_s)
        answer.finish()
    except asyncio.CancelledError:
        rec.incomplete = True
        raise
    except TimeoutError:
        rec.error_class = "timeout"
        rec.error_message = f"no complete response within {timeout_s:g} s"
    except HttpError as e:
        if rec.status is None:
            rec.error_class = "connection"
            rec.error_message = f"{connect_reason(e)} ({e})" if isinstance(e, ConnectError) else str(e)
        elif not 200 <= rec.status < 300:
            answer.error_answer()  # the status says what happened; keep what was read of the body
        else:
            rec.error_class, rec.error_message = "stream_interrupted", str(e)
    except Exception as e:  # anything else is still one failed request, never a crashed run
        rec.error_class = "connection" if rec.status is None else "stream_interrupted"
        rec.error_message = one_line(e)
        logger.debug("request %s: unexpected error", rec.request_id, exc_info=True)
    finally:
        if rec.end_ns is None:
            rec.end_ns = perf_counter_ns()


def connect_reason(exc: BaseException) -> str:
    """Why a connection could not be made, in a few words (``connection refused``, ``cannot resolve
    host``, ...), from a :class:`~benchflow.http_stream.ConnectError`, an ``OSError`` or an aiohttp error."""
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return "not an http:// or https:// URL"
    if isinstance(exc, ValueError):  # aiohttp.InvalidURL is one
        return f"invalid URL ({' '.join(str(exc).split())})"
    os_error = getattr(exc, "os_error", None) or (exc if isinstance(exc, OSError) else None)
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(os_error, socket.gaierror):
        return "cannot resolve host"
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    return " ".join(str(exc).split()) or type(exc).__name__
