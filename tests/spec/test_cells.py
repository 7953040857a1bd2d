"""Expansion into cells: order, ids as content hashes, seeds shared across backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchflow.spec import load_spec
from tests.spec.conftest import EXAMPLE


def plan(spec) -> list[tuple[str, str, int]]:
    return [(c.backend, c.load_label, c.repetition) for c in spec.cells()]


def test_interleaved_order(minimal):
    minimal["order"] = "interleaved"
    loads = ["c1", "c8", "r5-poisson"]
    expected = [(b, lp, r) for b in ("a", "b") for r in range(2) for lp in loads]
    assert plan(load_spec(minimal)) == expected


def test_grouped_order(minimal):
    minimal["order"] = "grouped"
    loads = ["c1", "c8", "r5-poisson"]
    expected = [(b, lp, r) for b in ("a", "b") for lp in loads for r in range(2)]
    assert plan(load_spec(minimal)) == expected


def test_shuffled_order_is_a_seeded_permutation_within_each_backend(minimal):
    minimal["order"] = "shuffled"
    minimal["repetitions"] = 4
    shuffled = plan(load_spec(minimal))
    minimal["order"] = "interleaved"
    interleaved = plan(load_spec(minimal))
    assert shuffled != interleaved and sorted(shuffled) == sorted(interleaved)
    assert [b for b, _, _ in shuffled] == ["a"] * 12 + ["b"] * 12  # backends stay grouped, in spec order
    minimal["order"] = "shuffled"
    assert plan(load_spec(minimal)) == shuffled  # same seed, same order
    minimal["workload"]["seed"] = 4
    assert plan(load_spec(minimal)) != shuffled


def test_index_is_the_run_position(minimal):
    assert [c.index for c in load_spec(minimal).cells()] == list(range(12))


def test_cell_ids_are_unique_and_differ_between_backends(minimal):
    cells = load_spec(minimal).cells()
    assert len({c.id for c in cells}) == len(cells)
    assert all(len(c.id) == 16 and int(c.id, 16) >= 0 for c in cells)


def test_identical_backends_with_different_names_get_different_ids(minimal):
    minimal["backends"][1]["engine_args"] = dict(minimal["backends"][0]["engine_args"])  # an A/A test
    cells = load_spec(minimal).cells()
    assert len({c.id for c in cells}) == len(cells)


def test_same_seed_across_backends_differs_across_points_and_repetitions(minimal):
    cells = load_spec(minimal).cells()
    by_backend = {b: {(c.load_label, c.repetition): c.seed for c in cells if c.backend == b} for b in ("a", "b")}
    assert by_backend["a"] == by_backend["b"]
    assert len(set(by_backend["a"].values())) == 6


def test_ids_ignore_name_description_labels_order_and_slo(minimal):
    ids = {(c.backend, c.load_label, c.repetition): c.id for c in load_spec(minimal).cells()}
    minimal.update(name="other", description="words", labels={"x": "y"}, order="grouped",
                   slo={"ttft": {"p99": "1s"}})
    minimal["backends"][0]["ready_timeout_s"] = 5
    again = {(c.backend, c.load_label, c.repetition): c.id for c in load_spec(minimal).cells()}
    assert again == ids


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["backends"][0]["engine_args"].update({"max-num-seqs": 63}),
        lambda s: s["backends"][0].update(tag="v2"),
        lambda s: s["backends"][0].update(command=["vllm", "serve"]),
        lambda s: s.update(model={"name": "other-model"}),
        lambda s: s["workload"].update(dataset="D(128,256)"),
        lambda s: s["workload"].update(max_requests=51),
        lambda s: s["workload"].update(api="chat"),
        lambda s: s["workload"].update(seed=9),
    ],
)
def test_ids_change_with_what_is_measured(minimal, change):
    before = load_spec(minimal).cells()[0].id
    change(minimal)
    assert load_spec(minimal).cells()[0].id != before


def test_equivalent_notation_gives_the_same_ids(minimal):
    before = [c.id for c in load_spec(minimal).cells()]
    minimal["workload"]["dataset"] = " d( 128 , 128 ) "
    assert [c.id for c in load_spec(minimal).cells()] == before


def test_cell_ids_are_stable_across_processes():
    code = ("import json; from benchflow.spec import load_spec; "
            f"print(json.dumps([(c.id, c.seed) for c in load_spec({str(EXAMPLE)!r}).cells()]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    here = [[c.id, c.seed] for c in load_spec(EXAMPLE).cells()]
    assert json.loads(out.stdout) == here


def test_cell_id_is_pinned():
    # Cell ids key stored results: changing how they are derived orphans every stored cell.
    # If this fails on purpose, it needs a migration story, not just a new constant.
    first = load_spec(EXAMPLE).cells()[0]
    assert (first.backend, first.load_label, first.repetition) == ("vllm-mns64", "c16", 0)
    assert first.id == "8b2e6d70c0494ac7"


def test_spelling_out_a_default_changes_no_id_or_hash(minimal):
    spec = load_spec(minimal)
    minimal["backends"][0].update(launcher="docker", image="vllm/vllm-openai", tag="latest", restart="never")
    minimal["workload"].update(temperature=0, api="completions", warmup_requests=0)
    explicit = load_spec(minimal)
    assert explicit.content_hash() == spec.content_hash()
    assert [c.id for c in explicit.cells()] == [c.id for c in spec.cells()]
