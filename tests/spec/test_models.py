"""Valid specs: defaults per backend kind, engine-arg rendering, durations, hashing, round trips."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchflow.spec import (
    BackendSpec, CampaignSpec, ConcurrencyLoad, OpenAIBackend, RateLoad, SimBackend, VllmBackend, load_spec,
    render_engine_args,
)
from tests.spec.conftest import EXAMPLE


def test_example_spec_loads_with_its_values():
    spec = load_spec(EXAMPLE)
    assert spec.name == "llama-8b-max-num-seqs"
    assert [b.name for b in spec.backends] == ["vllm-mns64", "vllm-mns128", "sim"]
    assert spec.workload.max_duration_s == 600.0  # "10m"
    assert spec.slo == {"ttft": {"p99": 0.5}, "tpot": {"p99": 0.05}}
    assert spec.workload.load_points[2] == RateLoad(rate=20, arrival="gamma", burstiness=0.5, max_concurrency=256)
    assert spec.compare.baseline == "vllm-mns64"
    assert spec.backend("sim").kind == "sim"
    with pytest.raises(KeyError):
        spec.backend("nope")


def test_defaults_per_kind(minimal):
    minimal["allow_simulated"] = True
    minimal["backends"] = [
        {"name": "v", "kind": "vllm"}, {"name": "s", "kind": "sglang"}, {"name": "sim", "kind": "sim"},
        {"name": "ext", "kind": "openai", "url": "http://127.0.0.1:8000/"},
    ]
    v, s, sim, ext = load_spec(minimal).backends
    assert (v.launcher, v.image_ref) == ("docker", "vllm/vllm-openai:latest")
    assert (s.launcher, s.image_ref) == ("docker", "lmsysorg/sglang:latest")
    assert (sim.launcher, sim.image_ref) == ("process", "benchflow/sim:latest")
    assert (ext.launcher, ext.url, ext.image_ref) == ("none", "http://127.0.0.1:8000", None)
    assert isinstance(v, VllmBackend) and isinstance(sim, SimBackend) and isinstance(ext, OpenAIBackend)
    assert all(isinstance(b, BackendSpec) for b in (v, s, sim, ext))
    assert v.needs_gpu and s.needs_gpu and not sim.needs_gpu and not ext.needs_gpu
    assert v.pull_policy == "if-missing" and v.network_mode == "bridge" and v.publish_host == "127.0.0.1"
    assert v.startup_grace_s == 0 and v.stop_grace_s == 10 and v.restart == "never"


def test_image_digest_and_gpu_selection(minimal):
    minimal["backends"][0].update(tag="sha256:abc", gpus=[0, "GPU-1234"])
    minimal["backends"][1].update(gpus=2)
    a, b = load_spec(minimal).backends
    assert a.image_ref == "vllm/vllm-openai@sha256:abc" and a.gpus == [0, "GPU-1234"] and b.gpus == 2


def test_engine_args_render_as_native_flags():
    args = {"max-num-seqs": 64, "enable-chunked-prefill": True, "x": ["a", "b"], "y": False,
            "gpu-memory-utilization": 0.9, "speculative-config": {"n": 2}}
    assert render_engine_args(args) == [
        "--max-num-seqs", "64", "--enable-chunked-prefill", "--x", "a", "--x", "b",
        "--gpu-memory-utilization", "0.9", "--speculative-config", '{"n":2}',
    ]
    backend = VllmBackend(name="a", kind="vllm", engine_args=args)
    assert backend.render_engine_args() == render_engine_args(args)


def test_engine_args_keep_their_types(minimal):
    minimal["backends"][0]["engine_args"] = {"max-num-seqs": 64, "dtype": "auto", "flag": True, "u": 0.9}
    args = load_spec(minimal).backends[0].engine_args
    assert args == {"max-num-seqs": 64, "dtype": "auto", "flag": True, "u": 0.9}
    assert type(args["max-num-seqs"]) is int and type(args["flag"]) is bool


def test_durations_accept_units_or_seconds(minimal):
    minimal["workload"].update(request_timeout_s="2m", max_duration_s=30)
    minimal["backends"][0]["ready_timeout_s"] = "1500ms"
    spec = load_spec(minimal)
    assert spec.workload.request_timeout_s == 120.0 and spec.workload.max_duration_s == 30.0
    assert spec.backends[0].ready_timeout_s == 1.5


def test_model_shorthand_and_env_numbers(minimal):
    minimal["model"] = "meta-llama/Llama-3.1-8B"
    minimal["backends"][0]["env"] = {"VLLM_LOGGING_LEVEL": "DEBUG", "OMP_NUM_THREADS": 4}
    spec = load_spec(minimal)
    assert spec.model.name == "meta-llama/Llama-3.1-8B" and spec.model.tokenizer is None
    assert spec.backends[0].env == {"VLLM_LOGGING_LEVEL": "DEBUG", "OMP_NUM_THREADS": "4"}


def test_load_point_labels_and_modes():
    assert (ConcurrencyLoad(concurrency=16).label, ConcurrencyLoad(concurrency=16).mode) == ("c16", "closed")
    assert (RateLoad(rate=20, arrival="poisson").label, RateLoad(rate=2.5, arrival="poisson").mode) == (
        "r20-poisson", "open")
    assert RateLoad(rate=1, arrival="constant", max_concurrency=4).label == "r1-constant-cap4"


def test_json_and_yaml_give_the_same_spec(write_spec):
    data = yaml.safe_load(EXAMPLE.read_text())
    from_json = load_spec(write_spec(json.dumps(data), "spec.json"))
    assert from_json == load_spec(EXAMPLE)


def test_dumped_spec_validates_back_to_the_same_spec():
    spec = load_spec(EXAMPLE)
    dumped = json.loads(json.dumps(spec.model_dump(mode="json")))
    assert dumped["slo"]["ttft"]["p99"] == "0.5s"  # units kept in the serialized form
    again = load_spec(dumped)
    assert again == spec and again.content_hash() == spec.content_hash()
    assert [c.id for c in again.cells()] == [c.id for c in spec.cells()]
    assert CampaignSpec.model_validate(dumped) == spec


def _shuffled(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False))
def test_content_hash_ignores_key_order(rng):
    data = yaml.safe_load(EXAMPLE.read_text())
    reordered = _shuffled(data, rng)
    assert load_spec(reordered).content_hash() == load_spec(data).content_hash()


def test_content_hash_changes_with_content(minimal):
    before = load_spec(minimal).content_hash()
    minimal["backends"][0]["engine_args"]["max-num-seqs"] = 65
    assert load_spec(minimal).content_hash() != before


def test_backend_content_hash_ignores_name_and_timeouts():
    a = VllmBackend(name="a", kind="vllm", engine_args={"max-num-seqs": 8, "x": True})
    b = VllmBackend(name="b", kind="vllm", engine_args={"x": True, "max-num-seqs": 8}, ready_timeout_s=5)
    c = VllmBackend(name="a", kind="vllm", engine_args={"max-num-seqs": 9, "x": True})
    d = VllmBackend(name="a", kind="vllm", engine_args={"max-num-seqs": 8, "x": True}, tag="v1")
    assert a.content_hash() == b.content_hash()
    assert len({a.content_hash(), c.content_hash(), d.content_hash()}) == 3


def test_json_schema_is_available_for_forms():
    schema = CampaignSpec.model_json_schema()
    assert "backends" in schema["properties"] and "workload" in schema["properties"]
