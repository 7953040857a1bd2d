"""Tuning spec validation and the constraint parser."""

from __future__ import annotations

import pytest

from benchflow.cli import main
from benchflow.errors import SpecError
from benchflow.tuning.constraints import ConstraintSyntaxError, parse_constraint
from benchflow.tuning.spec import load_tuning_spec

GOOD = {"name": "t", "model": "m", "allow_simulated": True, "backend": {"name": "sim", "kind": "sim"},
        "search_space": {"max-num-seqs": {"type": "int", "low": 2, "high": 32, "log": True},
                         "max-num-batched-tokens": {"type": "int", "low": 64, "high": 2048, "step": 64},
                         "scheduling-policy": {"type": "categorical", "choices": ["fcfs", "priority"]},
                         "enable-chunked-prefill": {"type": "bool"},
                         "gpu-memory-utilization": {"type": "float", "low": 0.5, "high": 0.9, "step": 0.1}},
        "constraints": ["max-num-batched-tokens >= 2 * max-num-seqs"],
        "workload": {"dataset": "D(64,16)", "load_points": [{"concurrency": 4}], "max_requests": 8},
        "objective": {"load_point": "c4", "metrics": {"output_throughput": "maximize"}},
        "slo": {"ttft": {"p99": "2s"}}, "trials": {"count": 3}}


def test_a_good_spec_validates_and_makes_a_trial_campaign():
    spec = load_tuning_spec(GOOD)
    assert spec.sampler_name == "tpe" and spec.slo_limits_ms() == {"ttft_ms.p99": 2000.0}
    campaign = spec.trial_campaign({"max-num-seqs": 4, "enable-chunked-prefill": True})
    assert campaign.backends[0].engine_args == {"max-num-seqs": 4, "enable-chunked-prefill": True}
    assert len(campaign.cells()) == 1 and campaign.slo["ttft"]["p99"] == 2.0


def test_two_objectives_default_to_tpe():
    """TPE beats NSGA-II on the two-objective tuning benchmark (bench/tuning.py)."""
    spec = load_tuning_spec({**GOOD, "objective": {"load_point": "c4", "metrics": {
        "output_throughput": "maximize", "ttft_ms.p99": "minimize"}}})
    assert spec.sampler_name == "tpe" and spec.directions == ["maximize", "minimize"]


def test_every_problem_is_reported_with_its_path():
    bad = {**GOOD, "backend": {"name": "sim", "kind": "sim", "bogus": 1}, "allow_simulated": False,
           "constraints": ["foo >= 3", "a ~ b"], "objective": {"load_point": "c9", "metrics": {"nope": "maximize"}},
           "search_space": {"max-num-seqs": {"type": "int", "low": 0, "high": 3},
                            "block-size": {"type": "categorical", "choices": [16, 17]},
                            "x": {"type": "float", "low": 2, "high": 1}},
           "slo": {"ttft": {"p99": 2}}, "trials": {}}
    with pytest.raises(SpecError) as e:
        load_tuning_spec(bad)
    text = "\n".join(e.value.problems)
    for expected in ("backend.bogus: unknown key", "objective.metrics.nope: unknown summary metric",
                     "slo.ttft.p99: a unit is required",
                     "constraints[0]: 'foo' is not in search_space", "constraints[1]: no comparison",
                     "objective.load_point: 'c9' is not a workload load point",
                     "search_space.max-num-seqs: Input should be greater than 0 (value 0)",
                     "search_space.block-size: Value error, must be one of", "search_space.x", "trials"):
        assert expected in text, f"{expected!r} missing from:\n{text}"


def test_gp_without_torch_is_refused_at_validation_with_the_remedy(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(SpecError, match=r"sampler.*gp needs PyTorch, which is not installed"):
        load_tuning_spec({**GOOD, "sampler": {"name": "gp"}})


def test_campaign_rules_apply_to_the_base_backend():
    # cross-field rules run on a backend that passes its own schema (a broken one is reported above)
    with pytest.raises(SpecError, match="backend.kind: sim backends are refused"):
        load_tuning_spec({**GOOD, "allow_simulated": False})


def test_a_flag_cannot_be_both_fixed_and_searched():
    with pytest.raises(SpecError, match="search_space.max-num-seqs: also fixed in backend.engine_args"):
        load_tuning_spec({**GOOD, "backend": {"name": "sim", "kind": "sim", "engine_args": {"max-num-seqs": 8}}})


def test_validate_cli_accepts_tuning_specs_and_exits_2_on_a_bad_one(tmp_path, capsys):
    import yaml

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    assert main(["validate", str(good)]) == 0
    assert "valid tuning spec; 5 flags" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "constraints": ["nope > 1"], "sampler": {"name": "annealing"}}))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "constraints[0]: 'nope' is not in search_space" in err and "sampler.name" in err


@pytest.mark.parametrize("text, params, holds", [
    ("a >= b", {"a": 2, "b": 2}, True), ("a > b", {"a": 2, "b": 2}, False), ("a <= 2 * b", {"a": 4, "b": 2}, True),
    ("a < 0.5 * b", {"a": 1, "b": 2}, False), ("a == 3", {"a": 3}, True), ("a != 3", {"a": 3}, False),
    ("max-num-batched-tokens >= max-num-seqs", {"max-num-batched-tokens": 64, "max-num-seqs": 128}, False),
])
def test_constraints(text, params, holds):
    c = parse_constraint(text)
    assert c.holds(params) is holds
    assert (c.violation(params) <= 0) is holds


@pytest.mark.parametrize("text", ["", "a", "a >= b >= c", "__import__('os') > 1", "1 > 2", "a + b > 1", "a >= "])
def test_bad_constraints_are_refused_without_eval(text):
    with pytest.raises(ConstraintSyntaxError):
        parse_constraint(text)
