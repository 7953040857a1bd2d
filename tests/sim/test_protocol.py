"""Request parsing and response bodies (OpenAI / vLLM wire format)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchflow.sim.protocol import DEFAULT_MAX_TOKENS, ProtocolError, ResponseWriter, parse_request, token_text


def test_prompt_tokens_are_whitespace_words():
    p = parse_request({"prompt": "one two  three\nfour", "max_tokens": 5}, "completion", 100)
    assert (p.prompt_tokens, p.max_tokens, p.stream, p.include_usage) == (4, 5, False, False)


def test_chat_counts_the_concatenated_message_contents():
    body = {"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "hello there world"}]}]}
    p = parse_request(body, "chat", 100)
    assert p.prompt_tokens == 5 and p.max_tokens == DEFAULT_MAX_TOKENS


def test_token_ids_and_single_item_lists_are_prompts():
    assert parse_request({"prompt": [1, 2, 3]}, "completion", 100).prompt_tokens == 3
    assert parse_request({"prompt": ["a b"]}, "completion", 100).prompt_tokens == 2


def test_max_completion_tokens_for_chat():
    assert parse_request({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 7},
                         "chat", 100).max_tokens == 7


def test_context_length_error_has_vllms_message():
    with pytest.raises(ProtocolError) as e:
        parse_request({"prompt": "a b c", "max_tokens": 10}, "completion", 12)
    assert e.value.status == 400 and e.value.err_type == "BadRequestError"
    assert e.value.message.startswith("This model's maximum context length is 12 tokens. However, you requested "
                                      "13 tokens (3 in the messages, 10 in the completion).")


@pytest.mark.parametrize("body", [
    [], {"prompt": 3}, {"prompt": "a", "max_tokens": 0}, {"prompt": "a", "max_tokens": "5"},
    {"prompt": "a", "n": 2}, {"prompt": "a", "max_tokens": 2, "min_tokens": 3},
    {"prompt": "a", "stream_options": {"include_usage": True}}, {"prompt": "a", "priority": "high"},
])
def test_bad_requests_are_400(body):
    with pytest.raises(ProtocolError) as e:
        parse_request(body, "completion", 100)
    assert e.value.status == 400


@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_prompt_count_is_len_split(text):
    assert parse_request({"prompt": text, "max_tokens": 1}, "completion", 10_000).prompt_tokens == len(text.split())


def _sse_json(chunk: bytes) -> dict:
    text = chunk.decode()
    assert text.startswith("data: ") and text.endswith("\n\n")
    return json.loads(text[len("data: "):])


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_stream_chunks_are_valid_json_in_vllms_shape(kind):
    w = ResponseWriter(kind, 'model "quoted"', "id-1")
    chunk = _sse_json(w.token_chunk(' tok"en', finished=True))
    assert chunk["model"] == 'model "quoted"' and chunk["id"] == "id-1"
    choice = chunk["choices"][0]
    assert choice["finish_reason"] == "length"
    assert (choice["delta"]["content"] if kind == "chat" else choice["text"]) == ' tok"en'
    assert _sse_json(w.token_chunk("x", finished=False))["choices"][0]["finish_reason"] is None
    usage = _sse_json(w.usage_chunk(3, 4))
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chat_role_chunk_carries_no_output():
    delta = _sse_json(ResponseWriter("chat", "m", "id").role_chunk())["choices"][0]["delta"]
    assert delta == {"role": "assistant", "content": ""}


def test_one_short_word_per_token():
    words = [token_text(3, i) for i in range(50)]
    assert all(len(w.split()) == 1 for w in words)
    assert len("".join(words).split()) == 50
