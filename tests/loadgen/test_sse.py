"""The SSE parser and the stream recorder, on recorded vLLM-style byte streams."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.records import RequestRecord
from benchflow.sse import SSEParser, StreamRecorder, choice_has_output, message_has_output, parse_sse
from tests.loadgen import streams


def _feed_split(data: bytes, cuts: list[int]) -> tuple[list[str], SSEParser]:
    parser = SSEParser()
    out, prev = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out += [m.data for m in parser.feed(data[prev:cut])]
        prev = cut
    out += [m.data for m in parser.close()]
    return out, parser


@pytest.mark.parametrize("name,data,payloads", streams.ALL, ids=[s[0] for s in streams.ALL])
def test_recorded_stream_whole(name, data, payloads):
    assert [m.data for m in parse_sse(data)] == payloads


@pytest.mark.parametrize("name,data,payloads", streams.ALL, ids=[s[0] for s in streams.ALL])
def test_recorded_stream_split_at_every_byte_position(name, data, payloads):
    for cut in range(len(data) + 1):
        got, _ = _feed_split(data, [cut])
        assert got == payloads, f"split at byte {cut}"


@pytest.mark.parametrize("name,data,payloads", streams.ALL, ids=[s[0] for s in streams.ALL])
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40))
@settings(max_examples=150, deadline=None)
def test_recorded_stream_any_splits(name, data, payloads, cuts):
    got, _ = _feed_split(data, [c % (len(data) + 1) for c in cuts])
    assert got == payloads


def test_stream_one_byte_at_a_time_keeps_multibyte_characters():
    got, _ = _feed_split(streams.COMPLETIONS, list(range(len(streams.COMPLETIONS))))
    texts = [json.loads(p)["choices"][0]["text"] for p in got[:4]]
    assert texts == [" Héllo", " 世界", " 🚀", " done"]


def test_keepalive_event_id_and_retry_lines_are_not_messages():
    msgs = parse_sse(b": ping\n\nevent: update\nid: 7\ndata: x\n\nid: 8\n\nretry: 10\n\n: ping\n\n")
    assert [(m.data, m.event) for m in msgs] == [("x", "update")]


def test_event_type_resets_after_each_message():
    msgs = parse_sse(b"event: a\ndata: 1\n\ndata: 2\n\n")
    assert [(m.data, m.event) for m in msgs] == [("1", "a"), ("2", "message")]


def test_crlf_split_between_cr_and_lf_is_one_line_ending():
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert [m.data for m in parser.feed(b"\n\r")] == ["a"]
    assert [m.data for m in parser.feed(b"\ndata: b\r\n\r\n")] == ["b"]
    assert parser.close() == [] and not parser.unterminated
    parser = SSEParser()
    assert parser.feed(b"data: 1\r") == []
    assert [m.data for m in parser.feed(b"\ndata: 2\r\n\r\n")] == ["1\n2"]  # not two messages


def test_byte_order_mark_is_dropped_even_when_split():
    parser = SSEParser()
    assert parser.feed(b"\xef") == [] and parser.feed(b"\xbb") == []
    assert [m.data for m in parser.feed(b"\xbfdata: a\n\n")] == ["a"]


def test_trailing_message_without_blank_line_is_flushed_and_flagged():
    parser = SSEParser()
    assert [m.data for m in parser.feed(b"data: 1\n\ndata: [DONE]\n")] == ["1"]
    assert parser.pending
    assert [m.data for m in parser.close()] == ["[DONE]"]
    assert parser.unterminated


def test_complete_stream_is_not_flagged():
    parser = SSEParser()
    parser.feed(streams.COMPLETIONS)
    assert parser.close() == [] and not parser.unterminated and not parser.pending


def test_stream_cut_mid_message_is_reported():
    cut = streams.COMPLETIONS[: streams.COMPLETIONS.index(b"\xe4\xb8\x96") + 1]  # inside "世"
    got, parser = _feed_split(cut, [5, 17])
    assert got[0] == streams.COMPLETIONS_PAYLOADS[0]
    assert len(got) == 2 and got[1].startswith('{"id"')  # the flushed half message, not JSON
    assert parser.unterminated
    assert parser.close() == []  # closing twice gives nothing more


payload_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(texts=st.lists(payload_text, min_size=1, max_size=8), data=st.data())
@settings(max_examples=200, deadline=None)
def test_any_json_messages_survive_any_split(texts, data):
    objs = [{"choices": [{"text": t}]} for t in texts]
    wire = b"".join(b"data: " + json.dumps(o, ensure_ascii=False).encode() + b"\n\n" for o in objs)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
    got, parser = _feed_split(wire, cuts)
    assert [json.loads(p) for p in got] == objs
    assert not parser.unterminated


_BLOCKS = [b"data: {\"a\":1}\n\n", b"data: x\n\n", b"data: [DONE]\n\n", b": ping\n\n", b"event: error\ndata: e\n\n",
           b"data: one\ndata: two\n\n", b"data: crlf\r\n\r\n", b"data:nospace\n\n", b"data: \xc3\xa9\n\n", b"\n\n",
           b"id: 3\ndata: y\n\n", b"data: partial"]


@given(blocks=st.lists(st.sampled_from(_BLOCKS), min_size=1, max_size=12), data=st.data())
@settings(max_examples=300, deadline=None)
def test_reads_of_whole_messages_parse_as_byte_by_byte(blocks, data):
    """A read of whole one-line ``data:`` messages (how an LLM server's stream usually arrives) takes a
    fast path; any other read, or one after it, must give what the byte-by-byte parse gives."""
    cuts = data.draw(st.lists(st.integers(0, len(blocks)), max_size=6))
    reads, prev = [], 0
    for cut in sorted(set(cuts)) + [len(blocks)]:
        reads.append(b"".join(blocks[prev:cut]))
        prev = cut
    wire = b"".join(reads)
    parser = SSEParser()
    fast = [m for r in reads for m in parser.feed(r)] + parser.close()
    slow = SSEParser()
    expected = [m for i in range(len(wire)) for m in slow.feed(wire[i:i + 1])] + slow.close()
    assert fast == expected
    assert parser.unterminated == slow.unterminated


def test_output_classification():
    assert choice_has_output({"text": " a"})
    assert not choice_has_output({"text": ""})
    assert not choice_has_output({"delta": {"role": "assistant", "content": ""}})
    assert choice_has_output({"delta": {"reasoning_content": "hm"}})
    assert choice_has_output({"delta": {"reasoning": "hm"}})
    assert choice_has_output({"delta": {"tool_calls": [{"function": {"arguments": "{"}}]}})
    assert not choice_has_output({"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}})
    assert not message_has_output({"choices": [], "usage": {"completion_tokens": 3}})
    assert not message_has_output({"choices": [{"delta": {}, "finish_reason": "stop"}]})


def _record(data: bytes, cuts=(), status=200) -> RequestRecord:
    rec = RequestRecord(request_id=0, warmup=False, start_ns=0, status=status, input_tokens=99)
    recorder = StreamRecorder(rec)
    prev = 0
    for i, cut in enumerate(sorted(set(cuts)) + [len(data)]):
        recorder.feed(data[prev:cut], 1000 * (i + 1))
        prev = cut
    recorder.close(10**9)
    return rec


def test_recorder_completions_stream():
    rec = _record(streams.COMPLETIONS, cuts=range(0, len(streams.COMPLETIONS), 40))
    assert rec.succeeded and rec.error_class is None
    assert len(rec.chunks) == 4 and all(n is None for _, n in rec.chunks)
    assert [t for t, _ in rec.chunks] == sorted(t for t, _ in rec.chunks)
    assert rec.completion_tokens == 4 and rec.input_tokens == 7


@given(cuts=st.lists(st.integers(0, len(streams.CHAT)), max_size=30))
@settings(max_examples=100, deadline=None)
def test_recorder_chat_counts_only_output_messages(cuts):
    rec = _record(streams.CHAT, cuts)
    assert rec.succeeded
    assert len(rec.chunks) == streams.CHAT_OUTPUT_MESSAGES  # not role-only, usage-only or pings
    assert rec.completion_tokens == 4 and rec.input_tokens == 11


def test_recorder_uses_growing_usage_as_tokens_per_message():
    msgs = [{"choices": [{"text": "ab"}], "usage": {"completion_tokens": 2}},
            {"choices": [{"text": "cde"}], "usage": {"completion_tokens": 5}}]
    wire = b"".join(b"data: " + json.dumps(m).encode() + b"\n\n" for m in msgs) + b"data: [DONE]\n\n"
    rec = _record(wire, cuts=[len(wire) // 2])
    assert [n for _, n in rec.chunks] == [2, 3] and rec.completion_tokens == 5


def test_recorder_without_usage_keeps_workload_input_tokens():
    wire = b'data: {"choices":[{"text":"a","finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
    rec = _record(wire)
    assert rec.succeeded and rec.completion_tokens is None and rec.input_tokens == 99


def test_recorder_stream_cut_before_done_is_interrupted():
    cut = streams.COMPLETIONS[: streams.COMPLETIONS.index(b"\xe4\xb8\x96")]
    rec = _record(cut)
    assert rec.error_class == "stream_interrupted" and not rec.succeeded
    assert len(rec.chunks) == 1


def test_recorder_finished_stream_without_done_is_accepted():
    wire = streams.COMPLETIONS.replace(b"data: [DONE]\n\n", b"")
    assert _record(wire).succeeded


def test_recorder_no_output():
    wire = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\ndata: [DONE]\n\n'
    rec = _record(wire)
    assert rec.error_class == "no_output" and not rec.succeeded


def test_recorder_error_inside_stream():
    wire = (b'data: {"choices":[{"text":"a"}]}\n\n'
            b'data: {"error": {"object": "error", "message": "engine\\ndied", "code": 500}}\n\ndata: [DONE]\n\n')
    rec = _record(wire)
    assert rec.error_class == "http_5xx" and "engine died" in rec.error_message and not rec.succeeded
