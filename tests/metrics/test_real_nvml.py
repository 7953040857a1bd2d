"""RealNvml's translation of pynvml's errors and API versions (pynvml's functions patched: no GPU)."""

from __future__ import annotations

import types

import pynvml
import pytest

from benchflow.errors import NvmlError
from benchflow.metrics.health import check_health
from benchflow.metrics.nvml import (
    RealNvml,
    NvmlNotSupportedError,
    decode_throttle_reasons,
)


@pytest.fixture
def real(monkeypatch) -> RealNvml:
    """A RealNvml whose pynvml has a 'driver' with one GPU."""
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: f"handle-{i}")
    nvml = RealNvml()
    nvml.init()
    return nvml


def raises(code):
    def fn(*_args):
        raise pynvml.NVMLError(code)

    return fn


def test_error_codes_map_to_not_supported_transient_and_fatal(real, monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", raises(pynvml.NVML_ERROR_NOT_SUPPORTED))
    with pytest.raises(NvmlNotSupportedError):
        real.power_mw(0)
    for code in (pynvml.NVML_ERROR_TIMEOUT, pynvml.NVML_ERROR_UNKNOWN):
        monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", raises(code))
        with pytest.raises(NvmlError) as info:
            real.power_mw(0)
        assert info.value.transient
    for code in (pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_NO_PERMISSION):
        monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", raises(code))
        with pytest.raises(NvmlError) as info:
            real.power_mw(0)
        assert not info.value.transient and not isinstance(info.value, NvmlNotSupportedError)
        assert "nvmlDeviceGetPowerUsage" in str(info.value)


def test_older_drivers_fall_back_to_the_older_function(real, monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", raises(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: 0x48)
    assert real.throttle_reasons(0) == 0x48

    def mismatch(h):
        raise pynvml.NVMLLibraryMismatchError("old driver")

    proc = types.SimpleNamespace(pid=99, usedGpuMemory=1024)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", mismatch)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses_v2", lambda h: [proc])
    assert [(p.pid, p.used_memory_bytes) for p in real.compute_processes(0)] == [(99, 1024)]


def test_values_are_converted_to_plain_types(real, monkeypatch):
    mem = types.SimpleNamespace(total=80, free=70, used=10)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: mem)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetRemappedRows", lambda h: (1, 0, 1, 0))
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion", lambda: 12040)
    m = real.memory_info(0)
    assert (m.total_bytes, m.free_bytes, m.used_bytes) == (80, 70, 10)
    r = real.remapped_rows(0)
    assert r.pending is True and r.failure is False
    assert real.cuda_driver_version() == 12040


def test_missing_library_is_a_non_transient_error(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlInit", raises(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    with pytest.raises(NvmlError) as info:
        RealNvml().init()
    assert not info.value.transient
    report = check_health(RealNvml())
    assert not report.nvml_available and not report.fake_nvml
    assert report.error == "NVML unavailable: nvmlInit: NVML Shared Library Not Found"


def test_decode_throttle_reasons():
    assert decode_throttle_reasons(0) == []
    assert decode_throttle_reasons(0x1 | 0x80) == ["gpu_idle", "hw_power_brake_slowdown"]
    assert decode_throttle_reasons(0x400) == ["bit_0x400"]
