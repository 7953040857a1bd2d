"""Which per-GPU slots a backend holds (benchflow.gpu_slots) and the slot settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchflow.gpu_slots import (
    GpuSlotError, LocalGpus, backend_gpu_indices, backend_slot_names, host_name, host_slot_names, host_slug,
)
from benchflow.spec import load_spec
from benchflow.testing.fake_nvml import fake_scenario


def backend(**fields):
    kind = fields.pop("kind", "sim")
    spec = load_spec({"name": "x", "allow_simulated": True, "model": "m",
                      "backends": [{"name": "b", "kind": kind, **fields}],
                      "workload": {"dataset": "D(8,8)", "load_points": [{"concurrency": 1}], "max_requests": 4}})
    return spec.backends[0]


def never() -> int:
    raise AssertionError("the GPUs must not be counted for this backend")


def test_a_sim_backend_holds_no_slot_unless_it_asks_for_one():
    assert backend_slot_names(backend(), host="node1", device_count=never) == []
    assert backend_slot_names(backend(gpu_slots=[0]), host="node1", device_count=never) == ["gpu-node1-0"]


def test_a_backend_on_several_gpus_takes_all_their_slots():
    assert backend_slot_names(backend(kind="vllm", gpus=[2, 0, 1]), host="n", device_count=never) == [
        "gpu-n-0", "gpu-n-1", "gpu-n-2"]
    assert backend_slot_names(backend(kind="vllm", gpus=2), host="n", device_count=never) == ["gpu-n-0", "gpu-n-1"]
    assert backend_slot_names(backend(kind="vllm", gpus="all"), host="n", device_count=lambda: 4) == host_slot_names(
        "n", 4)


def test_a_gpu_engine_without_gpus_sees_every_gpu_so_it_takes_every_slot():
    assert backend_slot_names(backend(kind="sglang"), host="n", device_count=lambda: 2) == ["gpu-n-0", "gpu-n-1"]
    with pytest.raises(GpuSlotError, match="cannot be counted"):
        backend_gpu_indices(backend(kind="vllm"))


def test_gpus_given_by_uuid_are_mapped_to_their_index_through_nvml():
    gpus = LocalGpus(nvml=fake_scenario("healthy-2gpu"), env={})
    uuid1 = fake_scenario("healthy-2gpu").devices[1].uuid
    b = backend(kind="vllm", gpus=[uuid1])
    assert backend_slot_names(b, host="n", device_count=gpus.device_count, uuid_to_index=gpus.uuid_to_index) == [
        "gpu-n-1"]
    assert gpus.device_count() == 2
    with pytest.raises(GpuSlotError, match="no GPU with UUID"):
        gpus.uuid_to_index("GPU-does-not-exist")


def test_without_nvml_the_count_comes_from_the_environment_or_the_error_says_how_to_fix_it():
    assert LocalGpus(nvml=fake_scenario("nodriver"), env={"BENCHFLOW_GPU_COUNT": "3"}).device_count() == 3
    with pytest.raises(GpuSlotError, match="BENCHFLOW_GPU_COUNT"):
        LocalGpus(nvml=fake_scenario("nodriver"), env={}).device_count()
    with pytest.raises(GpuSlotError, match="expected a number"):
        LocalGpus(env={"BENCHFLOW_GPU_COUNT": "many"}).device_count()


def test_the_host_name_comes_from_the_environment_or_the_hostname_and_is_slugged():
    assert host_name({"BENCHFLOW_GPU_HOST": "GPU-Node.Example.com"}) == "gpu-node-example-com"
    assert host_name({}) == host_slug(__import__("socket").gethostname())
    with pytest.raises(GpuSlotError):
        host_slug("...")


@given(st.text(min_size=1, max_size=40).filter(lambda s: any(c.isalnum() and c.isascii() for c in s)),
       st.integers(min_value=0, max_value=63))
def test_slot_names_are_valid_concurrency_limit_names(host, index):
    import re

    name = host_slot_names(host, index + 1)[-1]
    assert re.fullmatch(r"gpu-[a-z0-9]+(-[a-z0-9]+)*-\d+", name)
    assert name.endswith(f"-{index}")


def test_slot_settings_are_read_from_the_environment():
    from tasks.concurrency import slot_settings

    assert slot_settings({}) == ("auto", 6 * 3600.0, 300.0)
    assert slot_settings({"BENCHFLOW_GPU_SLOTS": "STRICT", "BENCHFLOW_GPU_SLOT_TIMEOUT_S": "10m",
                          "BENCHFLOW_GPU_SLOT_LEASE_S": "120"}) == ("strict", 600.0, 120.0)
    with pytest.raises(GpuSlotError, match="auto, strict, off"):
        slot_settings({"BENCHFLOW_GPU_SLOTS": "sometimes"})
    with pytest.raises(GpuSlotError, match="60s..24h"):
        slot_settings({"BENCHFLOW_GPU_SLOT_LEASE_S": "10"})


def test_gpu_slots_do_not_change_what_is_measured():
    plain, slotted = backend(), backend(gpu_slots=[0])
    assert plain.content_hash() == slotted.content_hash()
