"""The rendered ``containers.create`` arguments (no engine needed).

Each rendered dict is also pushed through docker-py's own conversion into the Engine API request
(``_create_container_args`` + ``HostConfig``), so an argument docker-py would reject fails here.
"""

from __future__ import annotations

import json
import re

import pytest
from docker.models.containers import _create_container_args
from hypothesis import given
from hypothesis import strategies as st

from benchflow.errors import SpecError
from benchflow.launch.docker_render import (
    container_name,
    device_requests,
    is_secret_name,
    redact_create_kwargs,
    render_container,
)
from benchflow.spec import SglangBackend, SimBackend, VllmBackend

CAMPAIGN = "c0ffee0123456789abcdef"


def engine_request(create_kwargs: dict) -> dict:
    """What docker-py sends to the Engine API for these kwargs (raises on an unknown argument)."""
    return _create_container_args({**create_kwargs, "version": "1.41"})  # as containers.create does


def test_vllm_preset_renders_args_only_command_with_native_flags():
    backend = VllmBackend(
        name="vllm-a", kind="vllm", gpus="all",
        engine_args={"max-num-seqs": 64, "enable-chunked-prefill": True, "x": ["a", "b"], "y": False},
    )
    plan = render_container(backend, model="facebook/opt-125m", campaign_id=CAMPAIGN, cell_id="", host_port=18000)
    kw = plan.create_kwargs
    assert kw["image"] == "vllm/vllm-openai:latest"
    # the image's entrypoint is `vllm serve`: the model comes first, then the flags
    assert kw["command"] == ["facebook/opt-125m", "--port", "8000", "--host", "0.0.0.0",
                             "--max-num-seqs", "64", "--enable-chunked-prefill", "--x", "a", "--x", "b"]
    assert kw["ports"] == {"8000/tcp": ("127.0.0.1", 18000)}
    assert kw["ipc_mode"] == "host"
    assert kw["labels"] == {"benchflow.campaign": CAMPAIGN, "benchflow.backend": "vllm-a",
                            "benchflow.cell": "", "benchflow.managed": "true"}
    assert plan.base_url == "http://127.0.0.1:18000"
    assert plan.pull_policy == "if-missing"
    host_config = engine_request(kw)["host_config"]
    assert host_config["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18000"}]}
    assert host_config["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]


def test_sglang_preset_renders_the_whole_launch_command():
    backend = SglangBackend(name="sgl", kind="sglang", gpus=1, engine_args={"tp": 1, "mem-fraction-static": 0.8})
    kw = render_container(backend, model="Qwen/Qwen2-7B", campaign_id=CAMPAIGN, host_port=31000).create_kwargs
    assert kw["image"] == "lmsysorg/sglang:latest"
    assert kw["command"] == ["python3", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2-7B",
                             "--host", "0.0.0.0", "--port", "30000", "--enable-metrics",
                             "--tp", "1", "--mem-fraction-static", "0.8"]
    assert kw["ports"] == {"30000/tcp": ("127.0.0.1", 31000)}
    engine_request(kw)


def test_sim_preset_passes_engine_args_as_engine_arg_pairs():
    backend = SimBackend(name="sim", kind="sim", launcher="docker", port=9000,
                         engine_args={"max-num-seqs": 8, "enable-chunked-prefill": True})
    plan = render_container(backend, model="sim-model", campaign_id=CAMPAIGN, cell_id="cafe" * 16, host_port=19000)
    kw = plan.create_kwargs
    assert kw["image"] == "benchflow/sim:latest"
    assert kw["command"] == ["--host", "0.0.0.0", "--port", "9000", "--model", "sim-model",
                             "--engine-arg", "max-num-seqs=8", "--engine-arg", "enable-chunked-prefill=true"]
    assert kw["labels"]["benchflow.cell"] == "cafe" * 16
    assert "device_requests" not in kw and "ipc_mode" not in kw  # no GPU, no shared-memory default
    assert engine_request(kw)["host_config"]["Init"] is True


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("all", {"Count": -1, "DeviceIDs": []}),
        (2, {"Count": 2, "DeviceIDs": []}),
        ([0, 3], {"Count": 0, "DeviceIDs": ["0", "3"]}),
        (["GPU-8f6c2a1e-0000-1111-2222-333344445555"], {"Count": 0,
                                                        "DeviceIDs": ["GPU-8f6c2a1e-0000-1111-2222-333344445555"]}),
    ],
)
def test_gpu_selection_becomes_an_nvidia_device_request(gpus, expected):
    backend = VllmBackend(name="v", kind="vllm", gpus=gpus)
    kw = render_container(backend, model="m", campaign_id=CAMPAIGN).create_kwargs
    (request,) = engine_request(kw)["host_config"]["DeviceRequests"]
    assert request["Driver"] == "nvidia"
    assert request["Capabilities"] == [["gpu"]]
    assert {k: request.get(k) for k in expected} == expected


def test_no_gpus_means_no_device_request():
    kw = render_container(VllmBackend(name="v", kind="vllm"), model="m").create_kwargs
    assert "device_requests" not in kw
    assert device_requests(None) == [] and device_requests([]) == []


@pytest.mark.parametrize("bad", [True, -1, "two", {"a": 1}])
def test_invalid_gpu_selection_is_a_spec_error(bad):
    with pytest.raises(SpecError, match="gpus"):
        device_requests(bad)


def test_user_overrides_image_tag_and_command_with_placeholders():
    backend = VllmBackend(
        name="custom", kind="vllm", image="registry.example/vllm-fork", tag="v0.6.3", shm_size="16g",
        command=["vllm", "serve", "{model}", "--port", "{port}", "--host", "{host}", "{engine_args}", "--trailing"],
        engine_args={"max-num-seqs": 32, "speculative-config": {"method": "ngram", "num_speculative_tokens": 4}},
    )
    kw = render_container(backend, model="meta/llama", host_port=18001).create_kwargs
    assert kw["image"] == "registry.example/vllm-fork:v0.6.3"
    assert kw["command"] == ["vllm", "serve", "meta/llama", "--port", "8000", "--host", "0.0.0.0",
                             "--max-num-seqs", "32", "--speculative-config",
                             json.dumps({"method": "ngram", "num_speculative_tokens": 4}, separators=(",", ":")),
                             "--trailing"]
    assert kw["shm_size"] == "16g" and "ipc_mode" not in kw  # an explicit shm size replaces the ipc default
    engine_request(kw)


@pytest.mark.parametrize("kind", ["vllm", "sglang", "sim"])
def test_engine_args_that_would_override_the_preset_port_are_rejected(kind):
    cls = {"vllm": VllmBackend, "sglang": SglangBackend, "sim": SimBackend}[kind]
    backend = cls(name="b", kind=kind, launcher="docker", engine_args={"port": 9000, "max-num-seqs": 4})
    with pytest.raises(SpecError, match=r"backends\.b\.engine_args\.port"):
        render_container(backend, model="m")


def test_digest_tag_renders_an_image_digest_reference():
    backend = SimBackend(name="s", kind="sim", launcher="docker", tag="sha256:" + "ab" * 32)
    assert render_container(backend, model="m").image == "benchflow/sim@sha256:" + "ab" * 32


def test_host_network_publishes_nothing_and_binds_the_publish_host():
    backend = SimBackend(name="s", kind="sim", launcher="docker", network_mode="host", port=8123)
    plan = render_container(backend, model="m", host_port=9999)
    kw = plan.create_kwargs
    assert kw["network_mode"] == "host" and "ports" not in kw
    assert kw["command"][:4] == ["--host", "127.0.0.1", "--port", "8123"]
    assert plan.base_url == "http://127.0.0.1:8123"
    assert engine_request(kw)["host_config"]["NetworkMode"] == "host"


def test_publish_host_can_be_changed():
    backend = SimBackend(name="s", kind="sim", launcher="docker", publish_host="0.0.0.0")
    plan = render_container(backend, model="m", host_port=18555)
    assert plan.create_kwargs["ports"] == {"8000/tcp": ("0.0.0.0", 18555)}
    assert plan.base_url == "http://127.0.0.1:18555"  # probe through loopback, not 0.0.0.0


def test_secrets_are_redacted_for_logging_only():
    backend = VllmBackend(
        name="v", kind="vllm",
        env={"HF_TOKEN": "hf_abc123", "OPENAI_API_KEY": "sk-live-1", "AWS_SECRET_ACCESS_KEY": "aws-2",
             "DB_PASSWORD": "pw-3", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "0"},
        engine_args={"api-key": "sk-flag-4", "max-num-batched-tokens": 512},
    )
    plan = render_container(backend, model="m")
    shown = plan.redacted()
    text = repr(shown)
    for secret in ("hf_abc123", "sk-live-1", "aws-2", "pw-3", "sk-flag-4"):
        assert secret not in text
    assert shown["environment"]["HF_TOKEN"] == "***"
    assert shown["environment"]["TOKENIZERS_PARALLELISM"] == "false"
    assert shown["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert shown["command"][-4:] == ["--api-key", "***", "--max-num-batched-tokens", "512"]
    # the real arguments are untouched
    assert plan.create_kwargs["environment"]["HF_TOKEN"] == "hf_abc123"
    assert "sk-flag-4" in plan.create_kwargs["command"]


def test_redaction_of_inline_and_sim_style_secret_values():
    kw = {"command": ["--hf-token=abc", "--engine-arg", "api-key=xyz", "--engine-arg", "max-num-seqs=4"],
          "environment": {}}
    assert redact_create_kwargs(kw)["command"] == [
        "--hf-token=***", "--engine-arg", "api-key=***", "--engine-arg", "max-num-seqs=4"
    ]


@pytest.mark.parametrize(
    ("name", "secret"),
    [("HF_TOKEN", True), ("api-key", True), ("Password", True), ("MY_SECRET", True), ("apikey", True),
     ("max-num-batched-tokens", False), ("TOKENIZERS_PARALLELISM", False), ("KEYCLOAK_URL", False)],
)
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


_flag_names = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True).filter(
    lambda n: n not in ("port", "host", "model", "model-path"))
_values = st.one_of(st.booleans(), st.integers(-5, 10**6), st.text("abcxyz0123._/", min_size=1, max_size=8),
                    st.lists(st.integers(0, 99), min_size=1, max_size=3))


@given(st.dictionaries(_flag_names, _values, max_size=6))
def test_every_enabled_engine_arg_reaches_the_command(engine_args):
    kw = render_container(VllmBackend(name="v", kind="vllm", engine_args=engine_args), model="m").create_kwargs
    command = kw["command"]
    assert all(isinstance(arg, str) for arg in command)
    for name, value in engine_args.items():
        count = command.count(f"--{name}")
        if value is False:
            assert count == 0
        elif isinstance(value, list):
            assert count == len(value)
        else:
            assert count == 1
    sim = render_container(SimBackend(name="s", kind="sim", launcher="docker", engine_args=engine_args),
                           model="m").create_kwargs["command"]
    pairs = [sim[i + 1] for i, arg in enumerate(sim) if arg == "--engine-arg"]
    # The simulator takes every knob as name=value; false passes through so default-on knobs can be turned off.
    assert [p.split("=", 1)[0] for p in pairs] == list(engine_args)
    assert all(p.endswith("=false") for p, v in zip(pairs, engine_args.values()) if v is False)


@given(backend=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True),
       campaign=st.text(max_size=40), cell=st.text(max_size=70))
def test_container_names_are_valid_docker_names(backend, campaign, cell):
    name = container_name(campaign, backend, cell)
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name)
    assert name.startswith("benchflow-")


def test_container_names_differ_for_campaigns_sharing_a_long_prefix():
    first = container_name("nightly-sweep-2025-06-01-a", "vllm", "cell")
    second = container_name("nightly-sweep-2025-06-01-b", "vllm", "cell")
    assert first != second
    assert container_name("abc123", "vllm", "") == "benchflow-vllm-abc123"  # short ids stay readable
