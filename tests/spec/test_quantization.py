"""The engine-neutral ``quantization`` backend field: rendered to each engine's native flags,
unsupported combinations reported with their paths, modelled by the simulator."""

from __future__ import annotations

import argparse

import pytest
import yaml

from benchflow.cli import main
from benchflow.errors import SpecError
from benchflow.launch.commands import render_process_command
from benchflow.launch.docker_render import container_command
from benchflow.sim.cli_args import add_arguments, config_from_args
from benchflow.sim.config import build_engine_config, load_sim_config
from benchflow.spec import load_spec

WORKLOAD = {"dataset": "D(32,8)", "load_points": [{"concurrency": 1}], "max_requests": 4}


def campaign(*backends):
    return {"name": "q", "model": "m", "allow_simulated": True, "workload": WORKLOAD, "backends": list(backends)}


def backend(kind, **quant):
    return load_spec(campaign({"name": "b", "kind": kind, "engine_args": {"max-num-seqs": 8},
                               "quantization": quant})).backends[0]


@pytest.mark.parametrize("kind, weights, kv, expected", [
    ("vllm", "fp8", "fp8", ["--quantization", "fp8", "--kv-cache-dtype", "fp8"]),
    ("vllm", "awq", "auto", ["--quantization", "awq"]),
    ("vllm", "gptq", "auto", ["--quantization", "gptq"]),
    ("sglang", "fp8", "fp8", ["--quantization", "fp8", "--kv-cache-dtype", "fp8_e4m3"]),
    ("sglang", "int8", "auto", ["--quantization", "w8a8_int8"]),
    ("sglang", "none", "fp8", ["--kv-cache-dtype", "fp8_e4m3"]),
])
def test_quantization_renders_to_each_engines_native_flags(kind, weights, kv, expected):
    b = backend(kind, weights=weights, kv_cache=kv)
    for argv in (container_command(b, "m", "0.0.0.0", 8000), render_process_command(b, "m", "127.0.0.1", 8000)):
        assert argv[-len(expected) - 2:] == ["--max-num-seqs", "8", *expected], argv


def test_the_simulator_gets_quantization_as_engine_args_and_none_auto_render_nothing():
    b = backend("sim", weights="fp8", kv_cache="fp8")
    assert render_process_command(b, "m", "127.0.0.1", 8000)[-4:] == [
        "--engine-arg", "quantization=fp8", "--engine-arg", "kv-cache-dtype=fp8"]
    assert "--engine-arg" in container_command(b, "m", "0.0.0.0", 8000)
    plain = load_spec(campaign({"name": "b", "kind": "vllm", "engine_args": {"max-num-seqs": 8}})).backends[0]
    explicit_default = backend("vllm", weights="none", kv_cache="auto")
    assert explicit_default.render_engine_args() == plain.render_engine_args() == ["--max-num-seqs", "8"]
    assert plain.content_hash() != backend("vllm", kv_cache="fp8").content_hash(), "quantization is part of the config"


def test_unsupported_combinations_are_reported_together_with_their_paths(tmp_path, capsys):
    bad = campaign(
        {"name": "v", "kind": "vllm", "quantization": {"weights": "int8"}},
        {"name": "s", "kind": "sim", "quantization": {"weights": "awq", "kv_cache": "fp8"}},
        {"name": "dup", "kind": "sglang", "quantization": {"kv_cache": "fp8"}, "engine_args": {"kv-cache-dtype": "fp8_e5m2"}},
        {"name": "o", "kind": "openai", "url": "http://127.0.0.1:9", "quantization": {"kv_cache": "fp8"}},
        {"name": "x", "kind": "vllm", "quantization": {"kv_cache": "fp16"}},
    )
    with pytest.raises(SpecError) as e:
        load_spec(bad)
    problems = e.value.problems
    expected = ["backends[0].quantization.weights: kind vllm does not take 'int8'",
                "backends[1].quantization.weights: kind sim does not take 'awq'",
                "backends[2].engine_args.kv-cache-dtype: also set by quantization.kv_cache",
                "backends[3].quantization: not used by kind openai",
                "backends[4].quantization.kv_cache:"]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    assert "backends[1].quantization.weights" in out.out + out.err


def test_the_simulator_models_fp8_kv_cache_and_fp8_weights():
    base = build_engine_config(load_sim_config({}, {}))
    kv8 = build_engine_config(load_sim_config({}, {"kv-cache-dtype": "fp8"}))
    w8 = build_engine_config(load_sim_config({}, {"quantization": "fp8"}))
    assert kv8.num_gpu_blocks in (2 * base.num_gpu_blocks, 2 * base.num_gpu_blocks + 1), "half the bytes per token"
    assert kv8.costs == base.costs, "an fp8 KV cache only gives room (vLLM: no latency change)"
    assert w8.num_gpu_blocks > base.num_gpu_blocks, "fp8 weights free memory for the KV cache"
    assert w8.costs.step_overhead_s < base.costs.step_overhead_s, "and read fewer bytes per decode step"
    # the simulator's command line takes them, as flags or as --engine-arg (what a sim backend renders)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    as_flags = config_from_args(parser.parse_args(["--quantization", "fp8", "--kv-cache-dtype", "fp8"]))
    as_args = config_from_args(parser.parse_args(["--engine-arg", "quantization=fp8", "--engine-arg", "kv-cache-dtype=fp8"]))
    assert as_flags == as_args and as_flags.quantization == "fp8" and as_flags.kv_cache_dtype == "fp8"
    with pytest.raises(SpecError, match="quantization"):
        load_sim_config({}, {"quantization": "awq"})


def test_the_stored_backend_row_and_the_report_s_setup_show_the_quantization_flags():
    """What a reader of the report sees is what the engine was started with, quantization included."""
    from benchflow.report_tables import setup_lines
    from benchflow.store.rows import backend_rows_from_spec

    spec = load_spec(campaign({"name": "q8", "kind": "vllm", "engine_args": {"max-num-seqs": 8},
                               "quantization": {"weights": "fp8", "kv_cache": "fp8"}},
                              {"name": "plain", "kind": "vllm", "engine_args": {"max-num-seqs": 8}}))
    rows = {r["name"]: r for r in backend_rows_from_spec(spec)}
    assert rows["q8"]["engine_args"] == {"max-num-seqs": 8, "quantization": "fp8", "kv-cache-dtype": "fp8"}
    assert rows["plain"]["engine_args"] == {"max-num-seqs": 8}
    lines = setup_lines({"spec": {}}, list(rows.values()))
    assert "backend q8 (vllm): engine args --kv-cache-dtype fp8 --max-num-seqs 8 --quantization fp8" in lines
