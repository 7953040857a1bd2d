"""Recorded vLLM-style SSE byte streams (the shapes vLLM 0.x's OpenAI server writes with
``stream_options: {"include_usage": true}``), each with the data payloads a parser must give."""

from __future__ import annotations

import json


def _d(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(", ", ": "), ensure_ascii=False).encode() + b"\n\n"


def _cmpl(text, finish=None):
    return {"id": "cmpl-9f2c", "object": "text_completion", "created": 1718000000, "model": "llama",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}]}


def _chat(delta, finish=None):
    return {"id": "chatcmpl-77a1", "object": "chat.completion.chunk", "created": 1718000000, "model": "llama",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _usage(prompt, completion, chat=False):
    base = _chat({}) if chat else _cmpl("")
    base["choices"] = []
    base["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}
    return base


# /v1/completions, 4 tokens, with non-ASCII text (multi-byte UTF-8) and a final usage message.
COMPLETIONS_OBJS = [_cmpl(" Héllo"), _cmpl(" 世界"), _cmpl(" 🚀"), _cmpl(" done", "length"), _usage(7, 4)]
COMPLETIONS = b"".join(_d(o) for o in COMPLETIONS_OBJS) + b"data: [DONE]\n\n"
COMPLETIONS_PAYLOADS = [json.dumps(o, separators=(", ", ": "), ensure_ascii=False)
                        for o in COMPLETIONS_OBJS] + ["[DONE]"]

# /v1/chat/completions: role-only first message, keep-alive pings, reasoning, content, a tool
# call, usage-only message; CRLF line endings and event/id/retry fields as some proxies add.
CHAT_OBJS = [
    _chat({"role": "assistant", "content": ""}),
    _chat({"reasoning_content": "Thinking… ✓"}),
    _chat({"content": "Ünïcödé"}),
    _chat({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    _chat({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Zürich\"}"}}]}, "tool_calls"),
    _usage(11, 4, chat=True),
]


def _crlf(b: bytes) -> bytes:
    return b.replace(b"\n", b"\r\n")


CHAT = (
    b": ping\r\n\r\n"
    + b"retry: 3000\r\n"
    + _crlf(_d(CHAT_OBJS[0]))
    + b"id: 1\r\nevent: message\r\n" + _crlf(_d(CHAT_OBJS[1]))
    + b":keep-alive\r\n"
    + _crlf(_d(CHAT_OBJS[2]))
    + b": ping\r\n\r\n"
    + _crlf(_d(CHAT_OBJS[3]))
    + _crlf(_d(CHAT_OBJS[4]))
    + _crlf(_d(CHAT_OBJS[5]))
    + b"data: [DONE]\r\n\r\n"
)
CHAT_PAYLOADS = [json.dumps(o, separators=(", ", ": "), ensure_ascii=False) for o in CHAT_OBJS] + ["[DONE]"]
#: Messages of CHAT that carry output: reasoning, content, tool call name, tool call arguments.
CHAT_OUTPUT_MESSAGES = 4

# Messages spread over several data lines (CR-only and CRLF line endings), no space after the colon,
# and a trailing message at EOF without the blank line after it.
ODD = (b"data:first\rdata: second\r\rdata: {\"x\": 1}\n\n"
       b"data: crlf 1\r\ndata: crlf 2\r\n\r\ndata: [DONE]\n")
ODD_PAYLOADS = ["first\nsecond", '{"x": 1}', "crlf 1\ncrlf 2", "[DONE]"]

ALL = [
    ("completions", COMPLETIONS, COMPLETIONS_PAYLOADS),
    ("chat", CHAT, CHAT_PAYLOADS),
    ("odd", ODD, ODD_PAYLOADS),
]
