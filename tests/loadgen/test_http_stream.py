"""The load generator's HTTP/1.1 client (benchflow.http_stream) against raw servers on 127.0.0.1 that
frame, cut, close and garble their answers on purpose: what a user of ``benchflow bench`` sees."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter_ns

import pytest

from benchflow.http_stream import Pool, Sink, StreamCut
from benchflow.loadgen import run_load
from benchflow.records import Prompt
from benchflow.spec import ConcurrencyLoad
from tests.support.helpers import wait_for_async

pytestmark = pytest.mark.integration

MESSAGES = [b'data: {"choices":[{"index":0,"text":"w"}]}\n\n'] * 3 + [
    b'data: {"choices":[{"index":0,"text":"","finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":3}}\n\n', b"data: [DONE]\n\n"]
SSE = b"".join(MESSAGES)
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"

Handler = Callable[[int, int, asyncio.StreamWriter], Awaitable[bool]]


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class RawServer:
    """A keep-alive HTTP server whose ``handler(connection_no, request_no_on_it, writer)`` writes the
    answer by hand; it returns False to close the connection. Counts connections and open ones."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler, self.ssl = handler, ssl_context
        self.connections = 0
        self.open = 0
        self.requests = 0
        self.heads: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n, self.connections, self.open = self.connections, self.connections + 1, self.open + 1
        try:
            k = 0
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests += 1
                if not await self.handler(n, k, writer):
                    break
                await writer.drain()
                k += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


async def _run(url: str, requests: int = 3, **kw):
    prompts = [Prompt(text="a b c", input_tokens=3, max_tokens=3)]
    return await run_load(url, "m", prompts, ConcurrencyLoad(concurrency=1), max_requests=requests,
                          request_timeout_s=kw.pop("request_timeout_s", 10.0), **kw)


async def test_a_pooled_connection_the_server_closed_while_idle_is_retried_on_a_new_one():
    # like a keep-alive timeout that fires as the next request is sent: the server drops the connection
    # on its second request without answering; the request goes again on a new connection, once
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        if k == 1:
            return False
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES))
        return True

    server = RawServer(handler)
    async with server as url:
        run = await _run(url, 4)
    assert [r.error_class for r in run.records] == [None] * 4, [r.error_message for r in run.records]
    assert all(len(r.chunks) == 3 for r in run.records)
    # 4 answered + 3 dropped (the second request on each connection), each sent once more on a new one
    assert server.requests == 7 and server.connections == 4


async def test_a_fresh_connection_closed_before_the_answer_is_one_failed_request_sent_once():
    server = RawServer(lambda conn, k, writer: _false())
    async with server as url:
        run = await _run(url, 2)
    assert [r.error_class for r in run.records] == ["connection", "connection"]
    assert run.records[0].error_message == "server disconnected before answering"
    assert server.requests == 2, "a request the server dropped on a new connection is not sent again"


async def _false() -> bool:
    return False


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close"])
async def test_answers_framed_by_length_chunks_or_the_close_are_read_whole(framing: str):
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        if framing == "content-length":
            writer.write(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(SSE) + SSE)
        elif framing == "chunked":
            writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES))
        else:
            writer.write(OK_HEAD + b"Connection: close\r\n\r\n" + SSE)
        return framing != "close"

    server = RawServer(handler)
    async with server as url:
        run = await _run(url, 3)
    assert [r.error_class for r in run.records] == [None] * 3, [r.error_message for r in run.records]
    assert [r.completion_tokens for r in run.records] == [3, 3, 3]
    assert server.connections == (3 if framing == "close" else 1), "kept alive unless the body ends with the close"


async def test_an_error_answer_that_never_ends_is_recorded_with_its_status_not_as_a_timeout():
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(_chunked([b'{"error":{"message":"engine dead"}} ' + b"x" * 2000])[:-5])
        while True:  # and more, forever
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with RawServer(handler) as url:
        run = await _run(url, 1, request_timeout_s=30.0)
    rec = run.records[0]
    assert rec.status == 500 and rec.error_class == "http_5xx"
    assert rec.error_message.startswith('{"error":{"message":"engine dead"}}')
    assert (rec.end_ns - rec.start_ns) / 1e9 < 15, "ended once the message was read, not by the 30 s timeout"


async def test_an_answer_that_is_not_http_is_a_connection_error_naming_it():
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return True

    async with RawServer(handler) as url:
        run = await _run(url, 1)
    rec = run.records[0]
    assert rec.error_class == "connection" and "not a valid HTTP response" in rec.error_message


async def test_a_stream_cut_mid_answer_keeps_the_tokens_read_and_names_the_cut():
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES[:2])[:-5])
        await writer.drain()
        return False  # closed before the last chunk

    async with RawServer(handler) as url:
        run = await _run(url, 1)
    rec = run.records[0]
    assert rec.error_class == "stream_interrupted" and len(rec.chunks) == 2
    assert rec.error_message == "server disconnected before the answer was complete"


async def test_the_run_closes_every_connection_it_opened_also_those_cut_in_flight():
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES[:1])[:-5])
        while True:  # never finishes; a comment every 50 ms, until the client has closed the connection
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(_chunked([b": ping\n\n"])[:-5])

    server = RawServer(handler)
    async with server as url:
        prompts = [Prompt(text="a b c", input_tokens=3, max_tokens=3)]
        run = await run_load(url, "m", prompts, ConcurrencyLoad(concurrency=4), max_duration_s=2.0)
        assert run.stop_reason == "max_duration" and all(r.incomplete for r in run.records)
        await wait_for_async(lambda: server.open == 0, 10, what="the server to see every connection closed")
    assert server.connections == 4


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_endpoints_are_verified_against_the_system_trust_store_and_ssl_cert_file(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES))
        return True

    async with RawServer(handler, server_ctx) as url:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusted = await _run(url, 1)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a user trusts a private CA (OpenSSL's variable)
        trusted = await _run(url, 2)
    rec = untrusted.records[0]
    assert rec.error_class == "connection" and "certificate verify failed" in rec.error_message, rec.error_message
    assert [r.error_class for r in trusted.records] == [None, None]
    assert [r.completion_tokens for r in trusted.records] == [3, 3]


async def test_each_read_is_handed_over_with_the_time_it_arrived():
    # the body reaches the sink in the callback that read it: the rest, written 200 ms after the first
    # message was handed over (so never in the same read, however busy the machine), carries a time
    # stamp at least 200 ms later, taken before the sink is called
    first_handed = asyncio.Event()

    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES[:1])[:-5])
        await writer.drain()
        await asyncio.wait_for(first_handed.wait(), 30)
        await asyncio.sleep(0.2)
        writer.write(_chunked(MESSAGES[1:]))
        return True

    class Reads(Sink):
        def __init__(self) -> None:
            self.reads: list[tuple[int, int]] = []

        def body(self, data: bytes, t_ns: int) -> None:
            self.reads.append((t_ns, perf_counter_ns()))
            first_handed.set()

    async with RawServer(handler) as url:
        pool = Pool(url + "/v1/completions", perf_counter_ns)
        sink = Reads()
        await pool.exchange(pool.request(json.dumps({"a": 1}).encode()), sink, 10.0)
        pool.close()
    assert len(sink.reads) >= 2
    assert all(stamp <= handed for stamp, handed in sink.reads)
    assert (sink.reads[-1][0] - sink.reads[0][0]) / 1e6 >= 199


async def test_a_cut_on_a_reused_connection_after_part_of_the_answer_is_not_retried():
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        if k == 1:
            writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            return False
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES))
        return True

    server = RawServer(handler)
    async with server as url:
        pool = Pool(url + "/v1/completions", perf_counter_ns)
        await pool.exchange(pool.request(b"{}"), Sink(), 10.0)
        with pytest.raises(StreamCut, match="before the answer was complete"):
            await pool.exchange(pool.request(b"{}"), Sink(), 10.0)
        pool.close()
    assert server.requests == 2


async def test_credentials_in_the_url_are_sent_as_basic_auth_on_every_request():
    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES))
        return True

    server = RawServer(handler)
    async with server as url:
        run = await _run(url.replace("http://", "http://bench%40team:s3cret@") + "/v1", 2)
    assert [r.error_class for r in run.records] == [None, None]
    expected = b"Authorization: Basic " + base64.b64encode(b"bench@team:s3cret")
    assert all(expected in head for head in server.heads), server.heads
    assert all(head.startswith(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:") for head in server.heads)


class _Stop(BaseException):
    """What Prefect's SIGTERM handler raises (TerminationSignal), or Ctrl-C: not an Exception."""


def test_a_stop_signal_raised_while_a_read_is_parsed_reaches_the_run_not_a_failed_request():
    # a signal handler that raises does so wherever the main thread is; under load that is often inside
    # the parser's callback, which httptools wraps into its own HttpParserCallbackError
    from benchflow.asyncrun import run_sync

    class Interrupted(Sink):
        def body(self, data: bytes, t_ns: int) -> None:
            raise _Stop("SIGTERM")

    async def handler(conn: int, k: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(MESSAGES))
        return True

    async def main() -> None:
        async with RawServer(handler) as url:
            pool = Pool(url + "/v1/completions", perf_counter_ns)
            try:
                await pool.exchange(pool.request(b"{}"), Interrupted(), 10.0)
            finally:
                pool.close()

    with pytest.raises(_Stop, match="SIGTERM"):
        run_sync(main())
