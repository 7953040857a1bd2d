"""Quantization in tuning: the base backend's ``quantization`` field reaches every trial, and
``quantization.weights`` / ``quantization.kv_cache`` can be searched (rendered per engine)."""

from __future__ import annotations

import optuna
import pytest

from benchflow.errors import SpecError
from benchflow.tuning import report
from benchflow.tuning.spec import load_tuning_spec
from benchflow.tuning.study import run_study
from benchflow.tuning.virtual import evaluate_config, virtual_engine, virtual_steps

optuna.logging.set_verbosity(optuna.logging.WARNING)

QUANT_SPACE = {"quantization.kv_cache": {"type": "categorical", "choices": ["auto", "fp8"]},
               "quantization.weights": {"type": "categorical", "choices": ["none", "fp8"]}}


def data(**over):
    # a KV-cache-bound configuration: little memory for the cache, many long requests at once
    d = {"name": "q", "model": "sim-llama-8b", "allow_simulated": True,
         "backend": {"name": "sim", "kind": "sim", "engine_args": {"gpu-memory-utilization": 0.3}},
         "search_space": {"max-num-seqs": {"type": "categorical", "choices": [32, 128]}, **QUANT_SPACE},
         "workload": {"dataset": "D(1024,128)", "seed": 3, "load_points": [{"concurrency": 128}], "max_requests": 128},
         "objective": {"load_point": "c128", "metrics": {"output_throughput": "maximize"}},
         "sampler": {"name": "grid", "seed": 1}, "trials": {"count": 8}}
    d.update(over)
    return d


def test_the_base_backends_quantization_reaches_every_trial():
    spec = load_tuning_spec(data(backend={"name": "sim", "kind": "sim", "quantization": {"kv_cache": "fp8"}},
                                 search_space={"max-num-seqs": {"type": "categorical", "choices": [8, 16]}}))
    backend = spec.trial_campaign({"max-num-seqs": 8}).backends[0]
    assert backend.quantization.kv_cache == "fp8" and backend.engine_args == {"max-num-seqs": 8}
    plain = load_tuning_spec(data(search_space={"max-num-seqs": {"type": "categorical", "choices": [8]}}))
    blocks = virtual_engine(backend, "m").num_gpu_blocks
    assert blocks >= 2 * virtual_engine(plain.trial_campaign({"max-num-seqs": 8}).backends[0].model_copy(
        update={"engine_args": {"max-num-seqs": 8}}), "m").num_gpu_blocks
    vllm = load_tuning_spec(data(allow_simulated=False, backend={"name": "v", "kind": "vllm"},
                                 search_space={"max-num-seqs": {"type": "int", "low": 8, "high": 64}, **QUANT_SPACE}))
    argv = vllm.trial_campaign({"max-num-seqs": 8, "quantization.kv_cache": "fp8",
                                "quantization.weights": "fp8"}).backends[0].render_engine_args()
    assert argv == ["--max-num-seqs", "8", "--quantization", "fp8", "--kv-cache-dtype", "fp8"]


def test_a_study_can_search_quantization_and_its_winner_renders_the_native_flags():
    spec = load_tuning_spec(data())
    storage = optuna.storages.InMemoryStorage()
    run_study(spec, storage, virtual_steps(), study_id="q")
    study = optuna.load_study(study_name="q", storage=storage)
    by = {(t.params["quantization.kv_cache"], t.params["quantization.weights"], t.params["max-num-seqs"]): t.values[0]
          for t in study.trials}
    assert len(by) == 8
    assert by[("fp8", "none", 128)] > by[("auto", "none", 128)], "an fp8 KV cache fits more sequences"
    assert by[("auto", "fp8", 128)] > by[("auto", "none", 128)], "fp8 weights free memory and speed decode up"
    best = study.best_trial
    again = evaluate_config(spec, best.params, virtual_steps())
    assert again.values[0] == pytest.approx(best.values[0]), "the same objective code as an exhaustive sweep"
    block = report.backend_block(study)
    assert block["quantization"] == {k.split(".")[1]: v for k, v in best.params.items() if k.startswith("quantization.")}
    assert block["engine_args"] == {"gpu-memory-utilization": 0.3, "max-num-seqs": best.params["max-num-seqs"]}
    command = report.serve_command(study)
    for field, arg in (("weights", "quantization"), ("kv_cache", "kv-cache-dtype")):
        assert (f"--engine-arg {arg}=fp8" in command) == (block["quantization"][field] == "fp8"), command


def test_bad_quantization_search_spaces_are_reported_with_their_paths():
    with pytest.raises(SpecError) as e:
        load_tuning_spec(data(backend={"name": "sim", "kind": "sim", "quantization": {"kv_cache": "fp8"}},
                              search_space={"quantization.kv_cache": {"type": "categorical", "choices": ["auto", "fp16"]},
                                            "quantization.weights": {"type": "categorical", "choices": ["awq"]},
                                            "quantization.bits": {"type": "bool"}}))
    problems = e.value.problems
    for start in ("search_space.quantization.kv_cache: also fixed in backend.quantization.kv_cache",
                  "search_space.quantization.kv_cache: 'fp16': Input should be 'auto' or 'fp8'",
                  "search_space.quantization.weights: kind sim does not take 'awq'",
                  "search_space.quantization.bits: not a quantization field"):
        assert any(p.startswith(start) for p in problems), (start, problems)
    with pytest.raises(SpecError, match=r"search_space.kv-cache-dtype: also set by backend.quantization"):
        load_tuning_spec(data(backend={"name": "sim", "kind": "sim", "quantization": {"kv_cache": "fp8"}},
                              search_space={"kv-cache-dtype": {"type": "categorical", "choices": ["auto", "fp8"]}}))
    with pytest.raises(SpecError, match=r"backend.quantization.weights: kind sim does not take 'gptq'"):
        load_tuning_spec(data(backend={"name": "sim", "kind": "sim", "quantization": {"weights": "gptq"}}))


def test_validate_reports_quantization_preset_and_capacity_problems_together_and_exits_2(tmp_path, capsys):
    import yaml

    from benchflow.cli import main

    bad = data(backend={"name": "sim", "kind": "sim", "quantization": {"weights": "int8"}},
               search_space={"max-num-seqs": {"type": "int", "low": 8, "high": 64}},
               preset={"max-num-seqs": 4},
               objective={"load_point": "c128", "metrics": {"slo_capacity": "maximize"}},
               sampler={"name": "tpe", "seed": 1})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    for where in ("backend.quantization.weights", "preset.max-num-seqs", "objective.metrics.slo_capacity"):
        assert where in text, text
