"""OpenAI/vLLM wire format: request parsing and response bodies (pure functions, no I/O).

Prompt tokens are counted as ``len(text.split())`` (chat: the message contents joined by
spaces; a list of token ids counts its length). The output is one short word per token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from benchflow.errors import BenchflowError

DEFAULT_MAX_TOKENS = 16
WORDS = ("the", "a", "of", "and", "to", "in", "is", "it", "on", "for", "sim", "token", "model", "fast",
         "data", "time", "next", "word", "text", "step", "batch", "cache", "load", "run")


class ProtocolError(BenchflowError):
    """A request the server answers with an OpenAI-style error body (never escapes the server)."""

    def __init__(self, status: int, message: str, err_type: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type


def error_body(status: int, message: str, err_type: str) -> dict[str, Any]:
    """vLLM's error JSON."""
    return {"object": "error", "message": message, "type": err_type, "param": None, "code": status}


@dataclass(slots=True, frozen=True)
class ParsedRequest:
    kind: Literal["completion", "chat"]
    model: str | None
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    priority: int
    #: The prompt's tokens (words, or token ids), for prefix-cache block hashes.
    tokens: tuple = ()


def _int_field(body: dict[str, Any], name: str, default: int | None, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProtocolError(400, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _prompt_tokens(body: dict[str, Any], kind: str) -> list:
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProtocolError(400, "messages must be a non-empty list")
        texts = []
        for i, msg in enumerate(messages):
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(p.get("text", "") for p in content if isinstance(p, dict))
            elif content is not None:
                raise ProtocolError(400, f"messages[{i}].content must be a string or a list of parts")
        return " ".join(texts).split()
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt.split()
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return prompt
    raise ProtocolError(400, "prompt must be a string, a list of token ids, or a list of one of those")


def parse_request(body: Any, kind: Literal["completion", "chat"], max_model_len: int) -> ParsedRequest:
    """Validates a request body; ProtocolError (400) with vLLM's messages where it has them."""
    if not isinstance(body, dict):
        raise ProtocolError(400, "request body must be a JSON object")
    tokens = _prompt_tokens(body, kind)
    prompt_tokens = len(tokens)
    max_tokens = body.get("max_completion_tokens") if kind == "chat" else None
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens", DEFAULT_MAX_TOKENS, 1)
    else:
        max_tokens = _int_field(body, "max_completion_tokens", DEFAULT_MAX_TOKENS, 1)
    min_tokens = _int_field(body, "min_tokens", 0, 0)
    if min_tokens > max_tokens:
        raise ProtocolError(400, f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")
    if _int_field(body, "n", 1, 1) != 1:
        raise ProtocolError(400, "n > 1 is not supported by the simulator")
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ProtocolError(400, f"priority must be an integer, got {priority!r}")
    stream = bool(body.get("stream", False))
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise ProtocolError(400, "Stream options can only be defined when `stream=True`.")
    total = prompt_tokens + max_tokens
    if total > max_model_len:
        raise ProtocolError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{total} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). "
            "Please reduce the length of the messages or completion.",
        )
    model = body.get("model")
    return ParsedRequest(kind, model if isinstance(model, str) else None, prompt_tokens, max_tokens, stream,
                         bool((options or {}).get("include_usage", False)), priority, tuple(tokens))


def token_text(request_seq: int, index: int) -> str:
    """The text of output token ``index`` of the ``request_seq``-th request: one short word."""
    return " " + WORDS[(request_seq * 7 + index) % len(WORDS)]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ResponseWriter:
    """Builds the bodies of one response; SSE messages are pre-templated (cheap per token)."""

    def __init__(self, kind: Literal["completion", "chat"], model: str, request_id: str):
        self.kind = kind
        self.id = request_id
        self.created = int(time.time())
        head = {"id": request_id, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                "created": self.created, "model": model}
        self._head = head
        self._prefix = "data: " + json.dumps(head)[:-1] + ', "choices": [{"index": 0, '
        self._prefix += '"delta": {"content": ' if kind == "chat" else '"text": '

    def _sse(self, obj: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(obj)}\n\n".encode()

    def role_chunk(self) -> bytes:
        """The chat stream's first message: role only, no content (not output)."""
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return self._sse({**self._head, "choices": [choice]})

    def token_chunk(self, text: str, finished: bool) -> bytes:
        reason = '"length"' if finished else "null"
        close = "}" if self.kind == "chat" else ""
        stop = "" if self.kind == "chat" else ', "stop_reason": null'
        return (f'{self._prefix}{json.dumps(text)}{close}, "logprobs": null, "finish_reason": {reason}{stop}}}]}}'
                "\n\n").encode()

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._sse({**self._head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"

    def full_response(self, text: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The non-streaming body."""
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text}
            obj = "text_completion"
        choice.update({"logprobs": None, "finish_reason": "length", "stop_reason": None})
        return {**self._head, "object": obj, "choices": [choice], "usage": usage(prompt_tokens, completion_tokens)}
