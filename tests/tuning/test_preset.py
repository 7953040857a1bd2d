"""``preset``: a named (built-in) or inline starting point, enqueued once as the study's first trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from benchflow.errors import SpecError
from benchflow.tuning.spec import PRESETS, load_tuning_spec
from benchflow.tuning.study import open_study, run_study
from benchflow.tuning.virtual import virtual_steps

optuna.logging.set_verbosity(optuna.logging.WARNING)


def data(**over):
    d = {"name": "p", "model": "sim-llama-8b", "allow_simulated": True, "backend": {"name": "sim", "kind": "sim"},
         "search_space": {"max-num-seqs": {"type": "int", "low": 4, "high": 64, "step": 4},
                          "gpu-memory-utilization": {"type": "float", "low": 0.5, "high": 0.9, "step": 0.1},
                          "enable-chunked-prefill": {"type": "bool"}},
         "workload": {"dataset": "D(64,8)", "seed": 3, "load_points": [{"concurrency": 4}], "max_requests": 8},
         "objective": {"load_point": "c4", "metrics": {"output_throughput": "maximize"}},
         "sampler": {"name": "random", "seed": 5}, "trials": {"count": 2}, "preset": "latency"}
    d.update(over)
    return d


def test_a_built_in_preset_gives_only_its_searched_flags():
    spec = load_tuning_spec(data())
    latency = PRESETS["sim"]["latency"]
    assert spec.preset_flags() == {k: latency[k] for k in ("max-num-seqs", "gpu-memory-utilization",
                                                            "enable-chunked-prefill")}
    assert "max-num-batched-tokens" in latency and "max-num-batched-tokens" not in spec.preset_flags()
    inline = load_tuning_spec(data(preset={"max-num-seqs": 8}))
    assert inline.preset_flags() == {"max-num-seqs": 8}


def test_bad_presets_are_reported_with_their_paths():
    with pytest.raises(SpecError) as e:
        load_tuning_spec(data(preset={"max-num-seqs": 66, "gpu-memory-utilization": 0.95, "enable-chunked-prefill": 1,
                                      "block-size": 16}))
    problems = e.value.problems
    for start in ("preset.max-num-seqs: 66 is outside the range 4..64 step 4",
                  "preset.gpu-memory-utilization: 0.95 is outside the range 0.5..0.9",
                  "preset.enable-chunked-prefill: 1 is not true or false",
                  "preset.block-size: not in search_space"):
        assert any(p.startswith(start) for p in problems), (start, problems)
    with pytest.raises(SpecError) as e:  # a built-in's value outside the range: say which built-in
        load_tuning_spec(data(preset="throughput"))
    assert e.value.problems == ["preset (throughput).max-num-seqs: 256 is outside the range 4..64 step 4 of "
                                "search_space.max-num-seqs; give an inline preset (a mapping of flag values) instead"]
    with pytest.raises(SpecError, match=r"preset: 'fastest' is not a built-in preset of kind sim \(have: throughput, "
                                        r"latency\)"):
        load_tuning_spec(data(preset="fastest"))
    with pytest.raises(SpecError, match="preset: the grid sampler"):
        load_tuning_spec(data(sampler={"name": "grid"}, search_space={"max-num-seqs": {"type": "categorical",
                                                                                        "choices": [4, 32]}}))


def test_the_preset_is_the_first_trial_and_a_resume_does_not_enqueue_it_again():
    spec = load_tuning_spec(data(preset={"max-num-seqs": 8, "gpu-memory-utilization": 0.7}))
    storage = optuna.storages.InMemoryStorage()
    run_study(spec, storage, virtual_steps(), study_id="s")
    study = optuna.load_study(study_name="s", storage=storage)
    first = study.trials[0]
    assert first.params["max-num-seqs"] == 8 and first.params["gpu-memory-utilization"] == pytest.approx(0.7)
    assert first.user_attrs["preset"] == "inline" and first.user_attrs["measured"]
    assert "enable-chunked-prefill" in first.params, "flags the preset leaves out are sampled"
    # resume with a higher count: one more trial, sampled, not the preset again
    run_study(spec.model_copy(update={"trials": spec.trials.model_copy(update={"count": 4})}), storage,
              virtual_steps(), study_id="s")
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 4
    assert [t.number for t in study.trials if "preset" in t.user_attrs] == [0]
    # opening a study whose preset was enqueued but never run (killed before its first trial) leaves one
    storage2 = optuna.storages.InMemoryStorage()
    open_study(spec, storage2, "k")
    open_study(spec, storage2, "k")
    waiting = optuna.load_study(study_name="k", storage=storage2).get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["preset"] == "inline"


def test_the_capacity_example_spec_validates_and_starts_from_its_preset(capsys):
    """deployments/tuning/capacity.yaml (preset, quantization search, slo_capacity objective), in virtual time."""
    from pathlib import Path

    from benchflow.cli import main

    path = Path(__file__).resolve().parents[2] / "deployments" / "tuning" / "capacity.yaml"
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    spec = load_tuning_spec(path)
    spec = spec.model_copy(update={"trials": spec.trials.model_copy(update={"count": 2})})
    storage = optuna.storages.InMemoryStorage()
    run_study(spec, storage, virtual_steps(), study_id="c")
    first = optuna.load_study(study_name="c", storage=storage).trials[0]
    assert first.user_attrs["preset"] == "latency"
    assert {k: first.params[k] for k in ("max-num-seqs", "max-num-batched-tokens")} == {
        "max-num-seqs": 32, "max-num-batched-tokens": 2048}
    assert first.user_attrs["measured"] and first.values[0] > 2, first.user_attrs
