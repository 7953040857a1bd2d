"""Hostile or careless specs (issue 11.6): every one is a clean SpecError (exit code 2), fast,
never a traceback, a hang or an exhausted memory."""

from __future__ import annotations

import json
import os
import threading

import pytest
import yaml

from benchflow.cli import main
from benchflow.errors import SpecError
from benchflow.spec import check, load_spec
from benchflow.spec.reader import MAX_DEPTH, MAX_SPEC_BYTES


def problems_of(source) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(source)
    return info.value.problems


def one(source) -> str:
    problems = problems_of(source)
    assert len(problems) == 1, problems
    return problems[0]


def test_yaml_mapping_key_that_is_a_list(write_spec):
    assert "a mapping key must be a plain value" in one(write_spec("? [a, b]\n: 1\nname: x\n"))


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_deep_nesting(write_spec, suffix):
    for depth in (MAX_DEPTH + 1, 100_000):
        deep = "[" * depth + "]" * depth
        line = one(write_spec(f'{{"name": {deep}}}', f"deep{suffix}"))
        assert "nesting depth" in line or f"nested more than {MAX_DEPTH} levels deep" in line, line


def test_deep_nesting_in_a_dict(minimal):
    value: list = []
    for _ in range(5000):
        value = [value]
    minimal["labels"] = {"x": value}
    assert f"nested more than {MAX_DEPTH} levels deep" in one(minimal)


def test_huge_duration_is_refused(write_spec, minimal):
    text = yaml.safe_dump(minimal).replace("max_requests: 50", "max_requests: 50\n  max_duration_s: 1" + "0" * 400)
    line = one(write_spec(text))
    assert line.startswith("workload.max_duration_s: ")


def test_duration_of_a_year_is_refused_with_the_bound(minimal):
    minimal["workload"]["max_duration_s"] = "9000h"
    assert "at most 7 days" in one(minimal)


@pytest.mark.parametrize("where, key", [
    ("load_point", "rate"), ("workload", "temperature"), ("load_point", "burstiness"),
    ("health", "min_free_memory_gib"), ("workload", "max_duration_s"),
])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_from_yaml(write_spec, minimal, where, key, value):
    if where == "load_point":
        minimal["workload"]["load_points"][2] = {"rate": 5, "arrival": "gamma", key: "PLACEHOLDER"}
    elif where == "health":
        minimal["health"] = {key: "PLACEHOLDER"}
    else:
        minimal["workload"][key] = "PLACEHOLDER"
    line = one(write_spec(yaml.safe_dump(minimal).replace("PLACEHOLDER", value)))
    assert "finite" in line, line


def test_non_finite_numbers_from_json(write_spec, minimal):
    minimal["workload"]["temperature"] = float("nan")
    minimal["workload"]["load_points"][2]["rate"] = float("inf")
    problems = problems_of(write_spec(json.dumps(minimal), "spec.json"))
    assert problems == ["workload.load_points[2].rate: numbers must be finite, got inf",
                        "workload.temperature: numbers must be finite, got nan"]


def test_non_finite_numbers_inside_engine_args_do_not_break_hashing(minimal):
    minimal["backends"][0]["engine_args"] = {"speculative-config": {"x": float("inf")}}
    assert "finite" in one(minimal)


@pytest.mark.parametrize("field, value, reason", [
    ("repetitions", 10_000_000, "each repetition is a measured run"),
    ("repetitions", 2**63, "64 bits"),
    ("max_requests", 10**12, "held in memory"),
    ("warmup_requests", 10**9, "held in memory"),
    ("concurrency", 10**7, "open connection"),
    ("rate", 1e12, "computed up front"),
    ("seed", 2**62 * 3, "64 bits"),
])
def test_sane_upper_bounds_with_the_reason(minimal, field, value, reason):
    if field == "repetitions":
        minimal["repetitions"] = value
    elif field == "concurrency":
        minimal["workload"]["load_points"][0] = {"concurrency": value}
    elif field == "rate":
        minimal["workload"]["load_points"][2]["rate"] = value
    else:
        minimal["workload"][field] = value
    line = one(minimal)
    assert reason in line, line


def test_too_many_cells(minimal):
    minimal["repetitions"] = 1000
    minimal["workload"]["load_points"] = [{"concurrency": c} for c in range(1, 21)]
    line = one(minimal)
    assert line.startswith("repetitions: 2 backends x 20 load points x 1000 repetitions = 40,000 cells")


def test_prompts_too_large_for_memory(minimal):
    minimal["workload"].update(dataset="D(2000000,1)", max_requests=1000)
    assert "prompt tokens per cell" in one(minimal)


def test_dev_zero_is_refused():
    assert "not a regular file" in one("/dev/zero")


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(check(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # unblock the reader before failing
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert "not a regular file" in result[0][0]


def test_large_file_is_refused_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: x\ndescription: " + "a" * (MAX_SPEC_BYTES + 10) + "\n")
    assert "a spec file may be at most 1,048,576 bytes" in one(big)


def test_yaml_alias_bomb_inside_engine_args(write_spec, minimal):
    bomb = ["a: &a {x: 1, y: 2}"]
    for i in range(1, 30):
        bomb.append(f"{'a' * (i + 1)}: &{'a' * (i + 1)} {{" + ", ".join(f"k{j}: *{'a' * i}" for j in range(9)) + "}")
    text = yaml.safe_dump(minimal).replace("max-num-seqs: 64", "bomb: *" + "a" * 30)
    line = one(write_spec("\n".join(bomb) + "\n" + text))
    assert "holds more than 100,000 values (each use of a YAML alias counts its whole value)" in line


def test_shared_references_in_a_dict_count_each_time(minimal):
    value: dict = {"x": 1}
    for _ in range(40):
        value = {f"k{i}": value for i in range(4)}
    minimal["backends"][0]["engine_args"] = {"bomb": value}
    assert "more than 100,000 values" in one(minimal)


def test_recursive_alias(write_spec):
    assert "refers to itself" in one(write_spec("name: &a [*a]\n"))


def test_integer_of_thousands_of_digits(write_spec):
    assert "cannot read a value" in one(write_spec("name: x\nrepetitions: " + "9" * 5000 + "\n"))


def test_date_values_are_named(write_spec, minimal):
    minimal["labels"] = {"when": "DATE"}
    line = one(write_spec(yaml.safe_dump(minimal).replace("DATE", "2024-01-01").replace("'", "")))
    assert line == "labels.when: YAML read this as a date; quote it to make it a string"


def test_nul_bytes_in_env_values_are_refused(minimal, write_spec):
    minimal["backends"][0]["env"] = {"X": "a\x00b"}
    assert one(minimal).startswith("backends[0].env.X: must not contain a NUL byte")
    assert one(write_spec(json.dumps(minimal), "s.json")).startswith("backends[0].env.X: must not contain a NUL")


def test_nul_bytes_refused_on_direct_construction():
    from benchflow.spec import VllmBackend

    with pytest.raises(ValueError, match="NUL"):
        VllmBackend(name="a", kind="vllm", env={"X": "a\x00b"})
    with pytest.raises(ValueError, match="NUL"):
        VllmBackend(name="a", kind="vllm", command=["vllm", "serve\x00"])


def test_non_string_keys_are_refused(minimal):
    minimal["backends"][0]["engine_args"] = {"speculative-config": {1: "a", "b": 2}}
    assert "keys must be strings" in one(minimal)


@pytest.mark.parametrize("content", [
    "? [a]\n: 1\n", "name: &a [*a]\n", "a: " + "[" * 5000, "repetitions: 1" + "0" * 400 + "\n",
    "name: x\nrepetitions: 10000000\n", "\x00\x01\x02", "- 1\n", "",
])
def test_validate_exits_2_without_a_traceback(write_spec, capsys, content):
    assert main(["validate", str(write_spec(content))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("invalid spec")


def test_check_returns_problem_lines_and_never_raises(minimal, tmp_path):
    assert check(minimal) == []
    minimal["backends"][1]["name"] = "a"
    assert check(minimal) == ["backends[1].name: duplicate backend name 'a' (also backends[0])"]
    assert check(load_spec({**minimal, "backends": minimal["backends"][:1]})) == []
    assert check(42)[0].startswith("(top level): expected a spec file path or a mapping")
    assert check(tmp_path / "missing.yaml") == [f"{tmp_path / 'missing.yaml'}: file not found"]


@pytest.mark.parametrize("dataset", ["D(1,100000000000000000000)", "N(100,1e12)/(10,1)", "U(1,2)/(1,99999999999)"])
def test_token_counts_in_a_distribution_are_bounded(minimal, dataset):
    minimal["workload"]["dataset"] = dataset
    assert "(tokens per request; longer than any context window)" in one(minimal)
