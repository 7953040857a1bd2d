"""Two different load points may not share a label: the label keys cells, aggregates and comparisons."""

from __future__ import annotations

import pytest

from benchflow.errors import SpecError
from benchflow.spec import load_spec


def _spec(tmp_path, load_points):
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text('{"timestamp": 0, "input_length": 8, "output_length": 4, "hash_ids": [1]}\n'
                                     '{"timestamp": 10, "input_length": 8, "output_length": 4, "hash_ids": [1]}\n')
    return {"name": "labels", "model": {"name": "m"}, "allow_simulated": True,
            "backends": [{"name": "s", "kind": "sim"}],
            "workload": {"dataset": "D(8,4)", "load_points": load_points, "max_requests": 4}}


def _problems(tmp_path, load_points) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(_spec(tmp_path, load_points), base_dir=tmp_path)
    return info.value.problems


def test_two_traces_with_one_name_are_refused_with_the_remedy(tmp_path):
    problems = _problems(tmp_path, [{"trace": {"path": "a.jsonl", "name": "day"}},
                                    {"trace": {"path": "b.jsonl", "name": "day"}}])
    assert any("load_points[1] has the label 'day' of load_points[0]; give it another name" in p for p in problems)


def test_two_gamma_rates_differing_only_in_burstiness_are_refused(tmp_path):
    problems = _problems(tmp_path, [{"rate": 4, "arrival": "gamma", "burstiness": 2},
                                    {"rate": 4, "arrival": "gamma", "burstiness": 3}])
    assert any("has the label 'r4-gamma' of load_points[0]; they would share cells and aggregates" in p
               for p in problems), problems


def test_distinct_labels_still_load(tmp_path):
    spec = load_spec(_spec(tmp_path, [{"trace": {"path": "a.jsonl", "name": "day"}},
                                      {"trace": {"path": "b.jsonl", "name": "night"}}, {"concurrency": 2}]),
                     base_dir=tmp_path)
    assert [p.label for p in spec.workload.load_points] == ["day", "night", "c2"]
