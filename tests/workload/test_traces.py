"""Mooncake-style trace replay and ShareGPT conversations (benchflow.traces)."""

from __future__ import annotations

import json

import pytest

from benchflow.errors import SpecError
from benchflow.spec import load_spec
from benchflow.trace_replay import trace_load
from benchflow.traces import BLOCK_SIZE, TraceRequest, read_sharegpt, read_trace, trace_prompts
from benchflow.workload import _WORDS, make_prompts, parse_dataset


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_block_size_is_mooncakes():
    assert BLOCK_SIZE == 512


def test_equal_hash_ids_give_equal_token_prefixes():
    reqs = [TraceRequest(0, 1100, 5, (0, 1, 2)), TraceRequest(10, 700, 5, (0, 1)), TraceRequest(20, 600, 5, (0, 7)),
            TraceRequest(30, 300, 5, ()), TraceRequest(40, 1100, 5, (0, 1, 2))]
    a, b, c, d, e = (p.text.split() for p in trace_prompts(reqs, _WORDS, block_size=BLOCK_SIZE))
    assert [len(x) for x in (a, b, c, d)] == [1100, 700, 600, 300]
    assert a[:700] == b and a == e  # blocks 0 and 1 shared (b ends inside block 1); the same ids, the same prompt
    assert a[:512] == c[:512] and a[512:600] != c[512:600]  # block 0 shared, then 1 vs 7
    assert d != a[:300]  # no hash_ids: words of its own
    # deterministic, and the seed changes the words
    assert trace_prompts(reqs, _WORDS)[0].text == trace_prompts(reqs, _WORDS)[0].text
    assert trace_prompts(reqs, _WORDS, seed=1)[0].text != trace_prompts(reqs, _WORDS)[0].text
    assert [p.max_tokens for p in trace_prompts(reqs, _WORDS)] == [5] * 5


def test_read_trace_sorts_and_lists_bad_lines(tmp_path):
    good = _write(tmp_path / "t.jsonl", [
        {"timestamp": 30, "input_length": 10, "output_length": 2, "hash_ids": [1]},
        {"timestamp": 0, "input_length": 12, "output_length": 3, "hash_ids": [0]},
    ])
    assert [r.timestamp_ms for r in read_trace(good)] == [0, 30]
    bad = _write(tmp_path / "b.jsonl", [{"timestamp": -1, "input_length": 1, "output_length": 1},
                                        {"timestamp": 0, "input_length": 0, "output_length": 1},
                                        {"timestamp": 0, "input_length": 1, "output_length": 1, "x": 1}])
    with pytest.raises(SpecError) as e:
        read_trace(bad)
    text = "\n".join(e.value.problems)
    assert "line 1: 'timestamp' must be milliseconds >= 0" in text
    assert "line 2: 'input_length' must be an integer >= 1" in text and "line 3: unknown key(s) ['x']" in text


def test_trace_load_sends_at_the_recorded_times_scaled():
    reqs = [TraceRequest(t, 1, 1) for t in (1000, 1000, 1250, 3000)]
    load = trace_load(reqs, time_scale=0.5)
    assert load.send_offsets_ns() == [0, 0, 125_000_000, 1_000_000_000]
    assert load.send_offsets_ns(2) == [0, 0]
    assert load.mode == "open" and load.rate == pytest.approx(3 / 1.0) and load.label == "trace-x0.5"


def test_sharegpt_conversations(tmp_path):
    path = _write(tmp_path / "s.jsonl", [
        {"id": "a", "conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi you two"},
                                      {"from": "human", "value": "more please"}, {"from": "gpt", "value": "ok"}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "nobody asked"}]},
        {"id": "c", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "why"}]},
    ])
    a, c = read_sharegpt(path, max_tokens=9)
    assert a.messages == ({"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi you two"},
                          {"role": "user", "content": "more please"})
    assert a.max_tokens == 1 and a.input_tokens == 7
    assert c.messages[0]["role"] == "system" and c.max_tokens == 9  # no answer recorded: the default
    as_array = tmp_path / "s.json"
    as_array.write_text(json.dumps([json.loads(line) for line in path.read_text().splitlines()]))
    assert read_sharegpt(as_array, max_tokens=9) == [a, c]
    bad = _write(tmp_path / "bad.jsonl", [{"conversations": [{"from": "robot", "value": "x"}]}, {"nope": 1}])
    with pytest.raises(SpecError) as e:
        read_sharegpt(bad)
    assert "line 1: unknown speaker 'robot'" in "\n".join(e.value.problems)
    assert "line 2: expected an object with a 'conversations' list" in "\n".join(e.value.problems)


def _spec(dataset):
    return load_spec({"name": "x", "model": "m", "backends": [{"name": "b", "kind": "openai", "url": "http://h:1"}],
                      "workload": {"dataset": dataset, "load_points": [{"concurrency": 1}], "max_requests": 3}})


def test_spec_and_cli_accept_the_formats(tmp_path):
    trace = _write(tmp_path / "t.jsonl", [{"timestamp": i, "input_length": 600, "output_length": 4, "hash_ids": [0, i]}
                                          for i in range(3)])
    spec = _spec({"jsonl": str(trace), "format": "mooncake"})
    prompts = make_prompts(spec.workload, 4, seed=0)
    assert [p.input_tokens for p in prompts] == [600] * 4 and prompts[3] == prompts[0]  # recorded order, cycled
    assert prompts[0].text.split()[:512] == prompts[1].text.split()[:512]
    assert parse_dataset(f"mooncake:{trace}").generate(3, 0) == prompts[:3]
    share = _write(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "a b c"}]}])
    assert make_prompts(_spec({"jsonl": str(share), "format": "sharegpt"}).workload, 2, 0)[0].input_tokens == 3
    assert spec.workload.measurement_fields()["dataset"]["format"] == "mooncake"  # part of the fingerprint
    with pytest.raises(SpecError) as e:  # a trace read as prompt lines is caught when the spec loads
        _spec({"jsonl": str(trace)})
    assert "unknown key(s)" in str(e.value.problems)
    with pytest.raises(SpecError) as e:
        _spec({"jsonl": str(share), "format": "mooncake"})
    assert "unknown key(s) ['conversations']" in str(e.value.problems)
