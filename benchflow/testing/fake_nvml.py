"""FakeNvml: a fake NVML behind the same interface as the real one (``NvmlInterface``).

No GPU exists on development and CI machines, so tests, demos and ``benchflow health`` (with
``BENCHFLOW_FAKE_NVML=<scenario>``) use this fake. It is always labelled a fake: its
``description`` starts with ``FAKE NVML`` and ``is_fake`` is True, so a report built from it can
never pass for a real host.

Devices are configurable (:class:`FakeDevice`): ECC errors, foreign processes, throttling, heat,
low free memory, pending page retirement or row remapping, unsupported queries, injected errors.
``init_error`` simulates a host without a driver. The energy counter grows with power x time.
Calls are thread-safe, and the fake records which threads called it (``call_threads``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from benchflow.errors import NvmlError
from benchflow.metrics.nvml import (
    MemoryInfo,
    NvmlInterface,
    NvmlNotSupportedError,
    ProcessInfo,
    RemappedRows,
    Utilization,
)

GIB = 1024**3

#: Clock event reason bits used by the scenarios.
GPU_IDLE = 0x001
HW_SLOWDOWN = 0x008
SW_THERMAL = 0x020
HW_THERMAL = 0x040


@dataclass
class FakeDevice:
    """One fake GPU. Every field can be changed while a sampler runs (the fake reads it live)."""

    uuid: str = "GPU-fake-0000"
    name: str = "FAKE NVIDIA H100 80GB HBM3"
    memory_total_bytes: int = 80 * GIB
    memory_used_bytes: int = GIB // 2
    gpu_utilization_pct: float = 0.0
    memory_utilization_pct: float = 0.0
    power_mw: int = 70_000
    energy_start_mj: int = 1_000_000
    temperature_c: int = 35
    slowdown_temperature_c: int = 90
    sm_clock_mhz: int = 1980
    throttle_reasons: int = GPU_IDLE
    processes: list[ProcessInfo] = field(default_factory=list)
    ecc_volatile_uncorrected: int = 0
    retired_pages_pending: bool = False
    remapped_rows: RemappedRows = field(default_factory=lambda: RemappedRows(0, 0, False, False))
    #: Interface method names that raise NvmlNotSupportedError on this device.
    unsupported: set[str] = field(default_factory=set)
    #: Interface method name -> the NvmlError it raises on this device.
    errors: dict[str, NvmlError] = field(default_factory=dict)


class FakeNvml(NvmlInterface):
    """An in-memory :class:`NvmlInterface`. See the module docstring."""

    is_fake = True

    def __init__(
        self,
        devices: list[FakeDevice] | None = None,
        *,
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
        init_error: NvmlError | None = None,
        scenario: str | None = None,
    ) -> None:
        self.devices = list(devices) if devices is not None else [FakeDevice()]
        self._driver_version = driver_version
        self._cuda_driver_version = cuda_driver_version
        self.init_error = init_error
        self.scenario = scenario
        self.description = f"FAKE NVML (scenario {scenario})" if scenario else "FAKE NVML"
        self._lock = threading.Lock()
        self._refcount = 0
        self._started = time.monotonic()
        self._last_energy: dict[int, int] = {}
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: Counter[str] = Counter()
        self.call_threads: set[str] = set()
        #: Seconds every device query sleeps (in the calling thread): a slow or hung driver.
        self.call_delay_s = 0.0

    @property
    def initialized(self) -> bool:
        return self._refcount > 0

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        self.call_threads.add(threading.current_thread().name)
        if self._refcount <= 0:
            raise NvmlError(f"{method}: Uninitialized")

    def _device(self, method: str, index: int) -> FakeDevice:
        with self._lock:
            self._enter(method)
        if self.call_delay_s > 0:
            time.sleep(self.call_delay_s)
        if not 0 <= index < len(self.devices):
            raise NvmlError(f"{method}: Invalid Argument (no GPU {index})")
        dev = self.devices[index]
        if method in dev.errors:
            raise dev.errors[method]
        if method in dev.unsupported:
            raise NvmlNotSupportedError(f"{method}: Not Supported")
        return dev

    def init(self) -> None:
        with self._lock:
            self.init_calls += 1
            self.calls["init"] += 1
            if self.init_error is not None:
                raise self.init_error
            self._refcount += 1

    def shutdown(self) -> None:
        with self._lock:
            self.shutdown_calls += 1
            self._enter("shutdown")
            self._refcount -= 1

    def driver_version(self) -> str:
        with self._lock:
            self._enter("driver_version")
        return self._driver_version

    def cuda_driver_version(self) -> int:
        with self._lock:
            self._enter("cuda_driver_version")
        return self._cuda_driver_version

    def device_count(self) -> int:
        with self._lock:
            self._enter("device_count")
        return len(self.devices)

    def device_uuid(self, index: int) -> str:
        return self._device("device_uuid", index).uuid

    def device_name(self, index: int) -> str:
        return self._device("device_name", index).name

    def memory_info(self, index: int) -> MemoryInfo:
        d = self._device("memory_info", index)
        used = min(d.memory_used_bytes, d.memory_total_bytes)
        return MemoryInfo(total_bytes=d.memory_total_bytes, free_bytes=d.memory_total_bytes - used, used_bytes=used)

    def utilization(self, index: int) -> Utilization:
        d = self._device("utilization", index)
        return Utilization(gpu_pct=d.gpu_utilization_pct, memory_pct=d.memory_utilization_pct)

    def power_mw(self, index: int) -> int:
        return self._device("power_mw", index).power_mw

    def energy_mj(self, index: int) -> int:
        d = self._device("energy_mj", index)
        # mW x s = mJ; never goes backwards even if power is changed mid-run.
        value = d.energy_start_mj + int(d.power_mw * (time.monotonic() - self._started))
        with self._lock:
            value = max(value, self._last_energy.get(index, 0))
            self._last_energy[index] = value
        return value

    def temperature_c(self, index: int) -> int:
        return self._device("temperature_c", index).temperature_c

    def slowdown_temperature_c(self, index: int) -> int:
        return self._device("slowdown_temperature_c", index).slowdown_temperature_c

    def sm_clock_mhz(self, index: int) -> int:
        return self._device("sm_clock_mhz", index).sm_clock_mhz

    def throttle_reasons(self, index: int) -> int:
        return self._device("throttle_reasons", index).throttle_reasons

    def compute_processes(self, index: int) -> list[ProcessInfo]:
        return list(self._device("compute_processes", index).processes)

    def volatile_uncorrected_ecc_errors(self, index: int) -> int:
        return self._device("volatile_uncorrected_ecc_errors", index).ecc_volatile_uncorrected

    def retired_pages_pending(self, index: int) -> bool:
        return self._device("retired_pages_pending", index).retired_pages_pending

    def remapped_rows(self, index: int) -> RemappedRows:
        return self._device("remapped_rows", index).remapped_rows


def _two(**second: object) -> list[FakeDevice]:
    """Two healthy H100s; ``second`` overrides fields of GPU 1."""
    gpu1 = FakeDevice(uuid="GPU-fake-0001", energy_start_mj=2_000_000)
    for k, v in second.items():
        setattr(gpu1, k, v)
    return [FakeDevice(uuid="GPU-fake-0000"), gpu1]


#: Named scenarios (``BENCHFLOW_FAKE_NVML=<name>``) and what is wrong in each.
SCENARIOS: dict[str, str] = {
    "healthy-2gpu": "two idle, healthy GPUs",
    "ecc": "GPU 1 has volatile uncorrected ECC errors",
    "foreign": "GPU 1 runs a foreign compute process (pid 4242, 20 GiB)",
    "throttle": "GPU 1 is throttled by HW slowdown and HW thermal slowdown",
    "hot": "GPU 1 is at its slowdown temperature",
    "lowmem": "GPU 0 has only 0.5 GiB free",
    "retired": "GPU 1 has a page retirement pending",
    "remap": "GPU 1 has a row remapping pending and a remapping failure",
    "unsupported": "one healthy GPU that supports no ECC, remapping, energy or throttle queries",
    "lost": "GPU 1 is lost (every query fails)",
    "nodriver": "the NVIDIA driver is not loaded",
}


def fake_scenario(name: str) -> FakeNvml:
    """A :class:`FakeNvml` set up as the named scenario (see :data:`SCENARIOS`)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown fake NVML scenario {name!r}; known: {', '.join(SCENARIOS)}")
    devices: list[FakeDevice]
    init_error = None
    if name == "healthy-2gpu":
        devices = _two()
    elif name == "ecc":
        devices = _two(ecc_volatile_uncorrected=3)
    elif name == "foreign":
        devices = _two(processes=[ProcessInfo(pid=4242, used_memory_bytes=20 * GIB)], memory_used_bytes=20 * GIB)
    elif name == "throttle":
        devices = _two(throttle_reasons=HW_SLOWDOWN | HW_THERMAL, temperature_c=84)
    elif name == "hot":
        devices = _two(temperature_c=92, throttle_reasons=0)
    elif name == "lowmem":
        devices = _two()
        devices[0].memory_used_bytes = devices[0].memory_total_bytes - GIB // 2
    elif name == "retired":
        devices = _two(retired_pages_pending=True)
    elif name == "remap":
        devices = _two(remapped_rows=RemappedRows(corrected=2, uncorrected=1, pending=True, failure=True))
    elif name == "unsupported":
        queries = {"volatile_uncorrected_ecc_errors", "retired_pages_pending", "remapped_rows",
                   "energy_mj", "throttle_reasons", "slowdown_temperature_c"}
        devices = [FakeDevice(name="FAKE NVIDIA GeForce RTX 4090", memory_total_bytes=24 * GIB, unsupported=queries)]
    elif name == "lost":
        lost = NvmlError("GPU is lost")
        methods = [m for m in vars(NvmlInterface) if not m.startswith("_")]
        devices = _two(errors={m: lost for m in methods})
    else:  # nodriver
        devices = []
        init_error = NvmlError("nvmlInit: Driver Not Loaded")
    return FakeNvml(devices, init_error=init_error, scenario=name)
