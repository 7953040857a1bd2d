"""The NVML sampler with FakeNvml (no GPU here): rows, energy, errors, clean stops."""

from __future__ import annotations

import asyncio
import json

import pytest

from benchflow.errors import NvmlError
from benchflow.metrics.gpu import GPU_METRICS, NvmlSampler
from benchflow.metrics.samples import SAMPLE_COLUMNS, series
from benchflow.testing.fake_nvml import HW_SLOWDOWN, HW_THERMAL, FakeDevice, FakeNvml, fake_scenario
from tests.support import wait_for_async


async def wait_polls(sampler: NvmlSampler, n: int) -> None:
    await wait_for_async(lambda: len(sampler.polls) >= n, timeout_s=30, what=f"{n} NVML polls")


async def test_rows_for_every_metric_of_every_gpu_and_a_clean_stop():
    fake = fake_scenario("healthy-2gpu")
    sampler = NvmlSampler(fake, interval_s=0.02)
    async with sampler.running():
        await wait_polls(sampler, 3)
    df = sampler.frame()
    assert list(df.columns) == SAMPLE_COLUMNS and set(df["source"]) == {"gpu"}
    for gpu, uuid in [("0", "GPU-fake-0000"), ("1", "GPU-fake-0001")]:
        mine = df[df["labels"].map(lambda s, g=gpu: json.loads(s)["gpu"] == g)]
        assert set(mine["metric"]) == set(GPU_METRICS)
        assert {json.loads(s)["uuid"] for s in mine["labels"]} == {uuid}
    assert sampler.gaps == []
    assert sampler.devices == [(0, "GPU-fake-0000"), (1, "GPU-fake-0001")]
    # Stopped cleanly: NVML released, no task left, and no NVML call ever ran on the event loop.
    assert not sampler.is_running
    assert not fake.initialized and fake.init_calls == fake.shutdown_calls == 1
    assert fake.call_threads and all(t.startswith("benchflow-nvml") for t in fake.call_threads)
    polls_at_stop = len(sampler.polls)
    await asyncio.sleep(0.1)
    assert len(sampler.polls) == polls_at_stop


async def test_values_and_units():
    fake = FakeNvml([FakeDevice(power_mw=250_000, gpu_utilization_pct=87.0, memory_used_bytes=10 * 2**30,
                                sm_clock_mhz=1755, temperature_c=61)])
    sampler = NvmlSampler(fake, interval_s=0.02)
    async with sampler.running():
        await wait_polls(sampler, 2)
    df = sampler.frame()

    def last(metric):
        return series(df, metric)[1][-1]

    assert last("gpu_power_w") == 250.0
    assert last("gpu_utilization_pct") == 87.0
    assert last("gpu_memory_used_bytes") == 10 * 2**30
    assert last("gpu_memory_total_bytes") == 80 * 2**30
    assert last("gpu_sm_clock_mhz") == 1755 and last("gpu_temperature_c") == 61


async def test_energy_counter_is_monotonic_and_grows_over_the_run():
    sampler = NvmlSampler(fake_scenario("healthy-2gpu"), interval_s=0.02)
    async with sampler.running():
        await wait_polls(sampler, 4)
    for gpu in ("0", "1"):
        t_ns, energy = series(sampler.frame(), "gpu_energy_mj", {"gpu": gpu})
        assert len(energy) >= 5
        assert all(b >= a for a, b in zip(energy, energy[1:], strict=False))
        assert energy[-1] > energy[0]


async def test_throttle_reasons_are_decoded_into_a_label():
    sampler = NvmlSampler(fake_scenario("throttle"), [1], interval_s=0.02)
    async with sampler.running():
        await wait_polls(sampler, 1)
    df = sampler.frame()
    row = df[df["metric"] == "gpu_throttle_reasons"].iloc[0]
    assert row["value"] == HW_SLOWDOWN | HW_THERMAL
    labels = json.loads(row["labels"])
    assert labels["reasons"] == "hw_slowdown,hw_thermal_slowdown" and labels["gpu"] == "1"
    assert set(json.loads(s)["gpu"] for s in df["labels"]) == {"1"}


async def test_unsupported_queries_are_skipped_without_gaps():
    fake = fake_scenario("unsupported")
    sampler = NvmlSampler(fake, interval_s=0.02)
    async with sampler.running():
        await wait_polls(sampler, 3)
    assert sampler.gaps == []
    metrics = set(sampler.frame()["metric"])
    assert "gpu_energy_mj" not in metrics and "gpu_throttle_reasons" not in metrics
    assert {"gpu_power_w", "gpu_temperature_c", "gpu_memory_used_bytes"} <= metrics
    assert (0, "energy") in sampler.unsupported
    assert fake.calls["energy_mj"] == 1  # asked once, then no more


async def test_a_failing_query_is_a_gap_and_sampling_goes_on():
    fake = fake_scenario("healthy-2gpu")
    sampler = NvmlSampler(fake, interval_s=0.02)
    async with sampler.running():
        await wait_polls(sampler, 1)
        fake.devices[1].errors["power_mw"] = NvmlError("Timeout", transient=True)
        await wait_for_async(lambda: sampler.gaps, timeout_s=30, what="a gap for the failing query")
        del fake.devices[1].errors["power_mw"]
        n = len(sampler.polls)
        await wait_polls(sampler, n + 2)
    assert "GPU 1 (GPU-fake-0001) power: Timeout" in sampler.gaps[0].error
    t_ns, power = series(sampler.frame(), "gpu_power_w", {"gpu": "1"})
    assert max(t_ns) > sampler.gaps[-1].t_ns  # power came back after the error cleared


async def test_without_a_driver_the_sampler_records_a_gap_or_raises_when_strict():
    sampler = NvmlSampler(fake_scenario("nodriver"), interval_s=0.02)
    async with sampler.running():
        await asyncio.sleep(0.05)
    assert sampler.frame().empty
    assert len(sampler.gaps) == 1 and sampler.gaps[0].error.startswith("NVML unavailable:")

    strict = NvmlSampler(fake_scenario("nodriver"), strict=True)
    with pytest.raises(NvmlError, match="Driver Not Loaded"):
        async with strict.running():
            pass

    missing = fake_scenario("healthy-2gpu")
    with pytest.raises(NvmlError, match="not present"):
        await NvmlSampler(missing, devices=[7], strict=True).start()
    assert not missing.initialized


async def test_stop_is_bounded_when_nvml_hangs():
    fake = FakeNvml([FakeDevice()])
    sampler = NvmlSampler(fake, interval_s=0.02, stop_timeout_s=0.1)
    await sampler.start()
    await wait_polls(sampler, 1)
    fake.call_delay_s = 1.0  # every query now hangs for a second
    await asyncio.sleep(0.05)
    await asyncio.wait_for(sampler.stop(), 3.0)
    assert not sampler.is_running
