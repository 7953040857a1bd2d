"""Prompt generation: lengths, determinism, JSONL files, and the spec's JSONL paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.errors import SpecError
from benchflow.spec import load_spec
from benchflow.workload import JsonlDataset, make_prompts, parse_dataset, read_jsonl_prompts
from tests.support import write_spec


def test_deterministic_lengths_and_word_count():
    prompts = parse_dataset("D(128,64)").generate(20, seed=1)
    assert len(prompts) == 20
    assert all(p.input_tokens == 128 and p.max_tokens == 64 and len(p.text.split()) == 128 for p in prompts)
    assert len({p.text for p in prompts}) == 20  # different prompts, so no accidental prefix-cache hits


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["N(20,30)/(5,10)", "U(0,40)/(0,3)", "D(3,1)"]), st.integers(0, 2**32), st.integers(0, 60))
def test_lengths_are_positive_ints_matching_the_text(notation, seed, n):
    prompts = parse_dataset(notation).generate(n, seed)
    assert len(prompts) == n
    for p in prompts:
        assert isinstance(p.input_tokens, int) and isinstance(p.max_tokens, int)
        assert p.input_tokens >= 1 and p.max_tokens >= 1
        assert len(p.text.split()) == p.input_tokens


def test_same_seed_same_prompts_other_seed_other_prompts():
    ds = parse_dataset("N(100,50)/(50,20)")
    assert ds.generate(30, seed=5) == ds.generate(30, seed=5)
    assert ds.generate(30, seed=5) != ds.generate(30, seed=6)


def test_uniform_stays_in_bounds_and_covers_them():
    prompts = parse_dataset("U(50,60)/(20,22)").generate(2000, seed=0)
    ins = {p.input_tokens for p in prompts}
    outs = {p.max_tokens for p in prompts}
    assert ins == set(range(50, 61)) and outs == {20, 21, 22}


def test_normal_matches_its_parameters_and_is_clipped():
    prompts = parse_dataset("N(480,240)/(300,150)").generate(4000, seed=0)
    ins = np.array([p.input_tokens for p in prompts])
    assert abs(ins.mean() - 480) < 15 and abs(ins.std() - 240) < 15
    clipped = parse_dataset("N(1,50)/(1,50)").generate(500, seed=0)
    assert min(p.input_tokens for p in clipped) == 1 and min(p.max_tokens for p in clipped) == 1


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_prompts_and_messages(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "hello there world", "max_tokens": 7},
        "",
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
    ])
    a, b = read_jsonl_prompts(path, default_max_tokens=33)
    assert (a.text, a.input_tokens, a.max_tokens, a.messages) == ("hello there world", 3, 7, None)
    assert b.max_tokens == 33 and b.messages[1] == {"role": "user", "content": "hi"} and b.input_tokens == 3


def test_jsonl_bad_lines_are_all_reported(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "ok"}, "{not json", {"prompt": "x", "max_tokens": 0}, {"text": "x"}, {"messages": []},
    ])
    with pytest.raises(SpecError) as info:
        read_jsonl_prompts(path)
    assert [p.split(":")[0] for p in info.value.problems] == ["line 2", "line 3", "line 4", "line 5"]


def test_jsonl_dataset_cycles_in_a_seeded_order(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(5)])
    ds = JsonlDataset(path)
    twelve = ds.generate(12, seed=3)
    assert len(twelve) == 12 and {p.text for p in twelve[:5]} == {f"p{i}" for i in range(5)}
    assert twelve == ds.generate(12, seed=3)
    assert parse_dataset(f"jsonl:{path}").generate(5, seed=3) == twelve[:5]


def test_spec_jsonl_path_resolves_against_the_spec_folder(tmp_path, minimal):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "prompts.jsonl", [{"prompt": "a b c"}, {"prompt": "d e", "max_tokens": 3}])
    minimal["workload"]["dataset"] = {"jsonl": "data/prompts.jsonl", "max_tokens": 9}
    spec = load_spec(write_spec(tmp_path, minimal))
    assert spec.workload.dataset.jsonl == tmp_path / "data" / "prompts.jsonl"
    prompts = make_prompts(spec.workload, 4, seed=1)
    assert sorted({(p.text, p.max_tokens) for p in prompts}) == [("a b c", 9), ("d e", 3)]


def test_spec_reports_missing_and_broken_jsonl(tmp_path, minimal):
    minimal["workload"]["dataset"] = {"jsonl": "missing.jsonl"}
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, minimal))
    assert info.value.problems == [
        f"workload.dataset.jsonl: file not found: {tmp_path / 'missing.jsonl'} "
        "(a relative path is resolved against the spec's folder)"]
    write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, "[1]"])
    minimal["workload"]["dataset"] = {"jsonl": "bad.jsonl"}
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, minimal))
    assert info.value.problems == ["workload.dataset.jsonl: bad.jsonl: line 2: each line must be a JSON object"]


def test_make_prompts_uses_the_workload_dataset(minimal):
    spec = load_spec(minimal)
    cell = spec.cells()[0]
    prompts = make_prompts(spec.workload, 10, cell.seed)
    assert prompts == parse_dataset("D(128,128)").generate(10, cell.seed)
