"""Server-sent events: a pure, incremental parser (bytes in, complete messages out), the
helpers that say whether an OpenAI-style stream message carries output, and
:class:`StreamRecorder`, which turns one response stream into a request's raw facts.

The parser follows the WHATWG event-stream rules that matter for LLM servers:

- lines end with LF, CRLF or CR (a CR at the end of one read and an LF at the start of the
  next are one line ending);
- a blank line dispatches the message; several ``data:`` lines are joined with LF;
- lines starting with ``:`` are comments (keep-alive pings) and are skipped;
- ``event:`` sets the message's event type; ``id:``, ``retry:`` and unknown fields are ignored;
- one leading space after the colon is removed; a leading UTF-8 BOM is dropped.

It works on bytes and decodes a payload only when its message is complete, so a multi-byte
UTF-8 character split across reads is never damaged (line endings are ASCII and cannot occur
inside a multi-byte sequence). At end of stream :meth:`SSEParser.close` flushes a trailing
message that had no blank line after it and sets :attr:`SSEParser.unterminated`, so the caller
can tell a stream that was cut in the middle of a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # records imports pandas; the parser stays light
    from benchflow.records import RequestRecord

try:  # orjson parses the stream messages several times faster; json is the fallback
    from orjson import loads as _json_loads
except ImportError:  # pragma: no cover - depends on the environment
    from json import loads as _json_loads

__all__ = ["DONE", "SSEMessage", "SSEParser", "StreamRecorder", "parse_sse", "choice_has_output",
           "message_has_output"]

#: The payload OpenAI-compatible servers send as the last message of a stream.
DONE = "[DONE]"

_BOM = b"\xef\xbb\xbf"


class SSEMessage(NamedTuple):
    """One dispatched message: its (decoded) data payload and its event type."""

    data: str
    event: str = "message"


#: Builds an :class:`SSEMessage` from a ``(data, event)`` tuple without NamedTuple's argument handling.
_new_message = tuple.__new__


class SSEParser:
    """Incremental SSE parser. Feed it the bytes of each read; it returns the messages that
    became complete. Not thread-safe; use one parser per stream."""

    __slots__ = ("_buf", "_data", "_event", "_skip_lf", "_started", "unterminated", "closed")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._skip_lf = False
        self._started = False
        #: Set by :meth:`close`: the stream ended inside a message (no blank line after it).
        self.unterminated = False
        self.closed = False

    @property
    def pending(self) -> bool:
        """True while part of a message has been read but not dispatched."""
        return bool(self._buf or self._data or self._event is not None)

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Adds the bytes of one read; returns the messages completed by them (maybe none)."""
        if not chunk:
            return []
        if (chunk[-2:] == b"\n\n" and chunk[:6] == b"data: " and self._started and not self._buf
                and not self._skip_lf and not self._data and self._event is None and b"\r" not in chunk):
            # Fast path, the usual read of an LLM stream: whole messages of one "data: ..." line each
            fast: list[SSEMessage] = []
            for block in chunk[:-2].split(b"\n\n"):
                if block[:6] != b"data: " or b"\n" in block:
                    break  # anything else: the general path below, from the start of this read
                fast.append(_new_message(SSEMessage, (block[6:].decode("utf-8", "replace"), "message")))
            else:
                return fast
        if not self._started:
            buf = self._buf + chunk
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf  # could still be a BOM; wait for more bytes
                return []
            self._started = True
            self._buf = b""
            chunk = buf[3:] if buf.startswith(_BOM) else buf
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A CR that ends this read may be the first half of a CRLF split across reads.
            self._skip_lf = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[SSEMessage] = []
        blocks = buf.split(b"\n\n")
        rest = blocks.pop()
        for block in blocks:
            # Fast path, the usual LLM stream: one "data: ..." line per message.
            if block[:6] == b"data: " and not self._data and self._event is None and b"\n" not in block:
                out.append(SSEMessage(block[6:].decode("utf-8", "replace")))
                continue
            for line in block.split(b"\n"):
                self._line(line, out)
            self._line(b"", out)
        lines = rest.split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            self._line(line, out)
        return out

    def close(self) -> list[SSEMessage]:
        """Ends the stream: flushes a trailing message that had no blank line after it.

        Sets :attr:`unterminated` when there was such a message (also when the final line was
        cut before its line ending). Calling it twice returns nothing the second time.
        """
        if self.closed:
            return []
        self.closed = True
        out: list[SSEMessage] = []
        if not self._started and self._buf:
            self._buf = self._buf[3:] if self._buf.startswith(_BOM) else self._buf
        self.unterminated = self.pending
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[SSEMessage]) -> None:
        if not line:
            if self._data:
                payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                event = "message" if self._event is None else self._event.decode("utf-8", "replace")
                out.append(SSEMessage(payload.decode("utf-8", "replace"), event or "message"))
                self._data = []
            self._event = None
            return
        if line[:1] == b":":
            return  # comment / keep-alive ping
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        # "id", "retry" and unknown fields carry nothing a benchmark needs.


def parse_sse(stream: bytes) -> list[SSEMessage]:
    """Parses a complete recorded stream (convenience for tests and tools)."""
    parser = SSEParser()
    return parser.feed(stream) + parser.close()


def choice_has_output(choice: dict[str, Any]) -> bool:
    """Whether one ``choices[i]`` entry of a stream message carries generated output.

    Completions: non-empty ``text``. Chat: a delta with non-empty ``content``,
    ``reasoning_content`` / ``reasoning``, or a tool call with a name or arguments. A delta with
    only ``role`` (the first chat message) is not output.
    """
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    if not delta:
        return False
    if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
        return True
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        if function.get("arguments") or function.get("name"):
            return True
    return False


def message_has_output(message: dict[str, Any]) -> bool:
    """Whether a decoded stream message carries output in any of its choices. Usage-only
    messages (``"choices": []``) and role-only messages do not."""
    return any(isinstance(choice, dict) and choice_has_output(choice) for choice in message.get("choices") or ())


#: How much of an error text is kept in ``RequestRecord.error_message``.
ERROR_MESSAGE_CHARS = 500
#: More output tokens than this per output message is taken as an impossible usage.
MAX_TOKENS_PER_MESSAGE = 1024


class StreamRecorder:
    """Turns the bytes of one 2xx response stream into the raw facts of its request record
    (METRICS.md): one chunk ``(t_ns, n_tokens or None)`` per message carrying output, the usage
    of the final message, and at :meth:`close` the error class when the stream was not a
    complete answer (``stream_interrupted``, ``no_output``, or an error sent inside the stream).

    Pure (no I/O): the caller passes the time each read arrived.
    """

    __slots__ = ("rec", "parser", "done", "finished", "prev_completion", "error", "bad", "messages", "max_tokens")

    def __init__(self, rec: RequestRecord, max_tokens: int | None = None) -> None:
        self.rec = rec
        #: The ``max_tokens`` the request asked for: a usage above it is impossible.
        self.max_tokens = max_tokens
        self.parser = SSEParser()
        self.done = False  # "[DONE]" seen
        self.finished = False  # a finish_reason or a usage block seen
        self.prev_completion = 0
        self.error: tuple[str, str] | None = None  # (error_class, message) sent inside the stream
        self.bad: str | None = None  # the last payload that was not JSON
        self.messages = 0

    def feed(self, data: bytes, t_ns: int) -> None:
        """One read of the response body, received at ``t_ns``."""
        for msg in self.parser.feed(data):
            self._message(msg.data, t_ns)

    def close(self, t_ns: int) -> None:
        """The stream closed at ``t_ns``: flushes a trailing message and classifies the result."""
        for msg in self.parser.close():
            self._message(msg.data, t_ns)
        rec = self.rec
        bad_usage = self._bad_usage()
        if self.error is not None:
            rec.error_class, rec.error_message = self.error
        elif bad_usage is not None:
            rec.error_class, rec.error_message = "invalid_usage", bad_usage
        elif not self.done and (self.parser.unterminated or not self.finished) and self.messages:
            rec.error_class = "stream_interrupted"
            rec.error_message = "stream ended before [DONE]" + (
                f" inside a message: {self.bad[:200]!r}" if self.bad else "")
        elif not rec.chunks:
            rec.error_class = "no_output"
            rec.error_message = f"HTTP {rec.status} but no output message ({self.messages} messages)"

    def _bad_usage(self) -> str | None:
        """Why the server's usage cannot be true, or ``None``. Negative counts; more output tokens
        than ``max_tokens`` asked for; or, when that is unknown, more than
        :data:`MAX_TOKENS_PER_MESSAGE` per output message."""
        rec = self.rec
        completion, prompt = rec.completion_tokens, rec.input_tokens
        if completion is not None and completion < 0:
            return f"server reported usage.completion_tokens={completion} (negative)"
        if prompt is not None and prompt < 0:
            return f"server reported usage.prompt_tokens={prompt} (negative)"
        if any(n is not None and n < 0 for _, n in rec.chunks):
            return "server reported a usage.completion_tokens that went down during the stream"
        if completion is not None and self.max_tokens is not None and completion > self.max_tokens:
            return (f"server reported usage.completion_tokens={completion}, more than the "
                    f"max_tokens={self.max_tokens} asked for")
        bound = MAX_TOKENS_PER_MESSAGE * max(1, len(rec.chunks))
        if completion is not None and completion > bound:
            return (f"server reported usage.completion_tokens={completion} for {len(rec.chunks)} output "
                    f"messages (more than {MAX_TOKENS_PER_MESSAGE} per message)")
        return None

    def _message(self, data: str, t_ns: int) -> None:
        self.messages += 1
        if data == DONE:
            self.done = True
            return
        try:
            obj = _json_loads(data) if data else None
        except ValueError:
            self.bad = data
            return
        if not isinstance(obj, dict):
            return
        rec = self.rec
        usage = obj.get("usage")
        output = False
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                output = output or choice_has_output(choice)
                if choice.get("finish_reason"):
                    self.finished = True
        n_tokens = None
        if isinstance(usage, dict):
            self.finished = True
            completion = usage.get("completion_tokens")
            if isinstance(completion, int):
                if output:  # a server that reports usage on every message tells each one's tokens
                    n_tokens = completion - self.prev_completion
                self.prev_completion = rec.completion_tokens = completion
            if isinstance(usage.get("prompt_tokens"), int):
                rec.input_tokens = usage["prompt_tokens"]
        if output:
            rec.chunks.append((t_ns, n_tokens))
        elif "error" in obj and not obj.get("choices"):
            self.error = _stream_error(obj["error"])


def _stream_error(err: Any) -> tuple[str, str]:
    """Error class and message of an ``{"error": ...}`` object sent inside a 2xx stream."""
    message = err.get("message", err) if isinstance(err, dict) else err
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and 400 <= code < 500:
        cls = "http_4xx"
    elif isinstance(code, int) and code >= 500:
        cls = "http_5xx"
    else:
        cls = "stream_interrupted"
    return cls, f"error in stream: {' '.join(str(message).split())}"[:ERROR_MESSAGE_CHARS]
