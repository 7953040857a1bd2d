"""Knob parsing and validation (vLLM flag names), profiles and the KV-cache plan."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchflow.errors import SpecError
from benchflow.sim.cli_args import add_arguments, config_from_args
from benchflow.sim.config import (
    ENGINE_ARG_NAMES, build_engine_config, engine_arg_problems, kv_cache_plan, load_sim_config,
    parse_engine_arg_pairs,
)
from benchflow.sim.profiles import PROFILES


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_resemble_vllm():
    c = load_sim_config({})
    assert (c.max_num_seqs, c.gpu_memory_utilization, c.block_size, c.scheduling_policy) == (256, 0.9, 16, "fcfs")
    assert c.enable_chunked_prefill and c.resolved_max_num_batched_tokens == 8192
    assert c.profile == "h100-8b" and c.resolved_max_model_len == 8192 and c.host == "127.0.0.1"


def test_engine_args_take_vllm_names_and_strings_from_the_command_line():
    c = config_from_args(_args("--engine-arg", "max-num-seqs=64", "--engine-arg", "enable_chunked_prefill=false",
                               "--engine-arg", "gpu-memory-utilization=0.5", "--engine-arg", "served-model-name=m"))
    assert (c.max_num_seqs, c.enable_chunked_prefill, c.gpu_memory_utilization, c.served_name) == (64, False, 0.5, "m")
    # without chunked prefill the default budget is max(max-model-len, 2048), as in vLLM
    assert c.resolved_max_num_batched_tokens == 8192


def test_native_flags_as_rendered_from_a_backend_spec_work():
    c = config_from_args(_args("--max-num-seqs", "32", "--no-enable-chunked-prefill", "--scheduling-policy", "priority",
                               "--time-scale", "0.5", "--profile", "l4-8b"))
    assert (c.max_num_seqs, c.enable_chunked_prefill, c.scheduling_policy, c.time_scale) == (32, False, "priority", 0.5)
    assert c.gpu_profile is PROFILES["l4-8b"]


def test_engine_arg_overrides_the_flag():
    c = config_from_args(_args("--max-num-seqs", "32", "--engine-arg", "max-num-seqs=8"))
    assert c.max_num_seqs == 8


def test_every_problem_is_reported_with_its_path():
    with pytest.raises(SpecError) as e:
        load_sim_config({}, {"max-num-seqs": 0, "no-such-flag": 1, "scheduling-policy": "lifo", "block-size": 7})
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == 4, text
    assert "engine_args.no-such-flag: unknown engine arg" in text
    assert "engine_args.max-num-seqs:" in text and "engine_args.scheduling-policy:" in text
    assert "engine_args.block-size: Value error, must be one of" in text


def test_engine_arg_problems_for_a_backend_spec():
    assert engine_arg_problems({"max-num-seqs": 64, "enable-chunked-prefill": True}) == []
    problems = engine_arg_problems({"tensor-parallel-size": 2}, prefix="backends[1].engine_args")
    assert problems and problems[0].startswith("backends[1].engine_args.tensor-parallel-size: unknown engine arg")


def test_host_port_and_model_are_not_engine_args():
    assert not {"host", "port", "model"} & set(ENGINE_ARG_NAMES)
    assert engine_arg_problems({"port": 1})


@pytest.mark.parametrize("pair", ["max-num-seqs", "=3", ""])
def test_malformed_engine_arg_pairs_are_rejected(pair):
    with pytest.raises(SpecError, match="expected NAME=VALUE"):
        parse_engine_arg_pairs([pair])


@given(name=st.sampled_from(ENGINE_ARG_NAMES), value=st.text(alphabet=st.characters(codec="ascii"), max_size=12))
def test_engine_arg_pairs_round_trip(name, value):
    assert parse_engine_arg_pairs([f"{name}={value}"]) == {name: value.strip()}


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(SpecError, match="known: a100-8b, h100-70b-tp4, h100-8b, l4-8b"):
        load_sim_config({"profile": "tpu"})


def test_kv_cache_grows_with_gpu_memory_utilization_and_shrinks_with_the_block_budget():
    blocks = [kv_cache_plan(load_sim_config({}, {"gpu-memory-utilization": u})).num_gpu_blocks for u in (0.3, 0.6, 0.9)]
    assert blocks == sorted(blocks) and blocks[0] > 0
    big_budget = kv_cache_plan(load_sim_config({}, {"max-num-batched-tokens": 65536}))
    assert big_budget.num_gpu_blocks < blocks[-1]  # activations of a bigger step take room from the cache


def test_default_h100_8b_cache_holds_about_450k_tokens():
    ec = build_engine_config(load_sim_config({}))
    assert 400_000 < ec.kv_capacity_tokens < 500_000  # (79.6 x 0.9 - 15 - 1.7) GiB / 128 KiB


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_starts_with_defaults(name):
    ec = build_engine_config(load_sim_config({"profile": name}))
    assert ec.kv_capacity_tokens >= ec.max_model_len
