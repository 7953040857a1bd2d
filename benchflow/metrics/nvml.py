"""The one small NVML interface, and its real implementation over ``pynvml`` (nvidia-ml-py).

Every NVML access in benchflow goes through :class:`NvmlInterface`. :class:`RealNvml` wraps
``pynvml``; :class:`benchflow.testing.fake_nvml.FakeNvml` implements the same interface for
tests and demos on machines without a GPU.

Error contract (every method, every implementation):

- The methods return plain Python values (``int``, ``str``, ``bool``, small dataclasses),
  never ``pynvml`` structures, and raise only :class:`~benchflow.errors.NvmlError`.
- A query the device or driver does not support raises :class:`NvmlNotSupportedError`
  (a subclass of ``NvmlError``). Callers treat it as a "not supported" note, not a failure.
- A *transient* failure raises ``NvmlError(transient=True)``. Transient NVML return codes are
  exactly those in :data:`TRANSIENT_NVML_ERRORS`: ``NVML_ERROR_TIMEOUT``, ``NVML_ERROR_UNKNOWN``
  and ``NVML_ERROR_NOT_READY``. Only these are worth retrying (the orchestration layer does so).
  Everything else (driver not loaded, library not found, no permission, GPU is lost, reset
  required, ...) is ``transient=False``: retrying will not help.

Threading: NVML calls block. Call them from a worker thread (``asyncio.to_thread`` or a sampler
thread), never from inside a coroutine. An implementation must tolerate calls from any one
thread at a time; callers must not issue calls concurrently from several threads.

Lifecycle: ``init()`` before any query, ``shutdown()`` once per successful ``init()``.
Device methods take the NVML device *index* (0-based, in NVML's enumeration order).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from benchflow.errors import NvmlError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# NVML return codes (stable C API values, also pynvml.NVML_ERROR_*).
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_NOT_READY = 27
NVML_ERROR_UNKNOWN = 999

#: NVML return codes that are reported as ``NvmlError(transient=True)``.
TRANSIENT_NVML_ERRORS = frozenset({NVML_ERROR_TIMEOUT, NVML_ERROR_UNKNOWN, NVML_ERROR_NOT_READY})

#: Clock event ("throttle") reason bits, as in ``nvmlClocksEventReason*``.
THROTTLE_REASONS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

#: Reasons that mean the GPU is being slowed by hardware or heat: an unhealthy benchmark host.
BAD_THROTTLE_MASK = 0x008 | 0x020 | 0x040 | 0x080


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the reason bits set in ``mask`` (unknown bits as ``bit_0x...``), low bit first."""
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(THROTTLE_REASONS.get(bit, f"bit_{bit:#x}"))
        bit <<= 1
    return names


class NvmlNotSupportedError(NvmlError):
    """The device or driver does not support this query (``NVML_ERROR_NOT_SUPPORTED``)."""


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    total_bytes: int
    free_bytes: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class Utilization:
    gpu_pct: float
    memory_pct: float


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    #: ``None`` when NVML cannot tell (for example under some virtualisation).
    used_memory_bytes: int | None


@dataclass(frozen=True, slots=True)
class RemappedRows:
    corrected: int
    uncorrected: int
    pending: bool
    failure: bool


class NvmlInterface(ABC):
    """The NVML operations benchflow uses. See the module docstring for the contract."""

    #: Shown in reports, so that a fake is never mistaken for a real GPU.
    description: str = "nvml"
    #: True only for fakes; reports built from a fake say so loudly.
    is_fake: bool = False

    @abstractmethod
    def init(self) -> None:
        """Load the library and initialise NVML. Raises NvmlError when NVML is unavailable."""

    @abstractmethod
    def shutdown(self) -> None:
        """Release NVML (once per successful ``init``)."""

    @abstractmethod
    def driver_version(self) -> str: ...

    @abstractmethod
    def cuda_driver_version(self) -> int:
        """CUDA driver API version as NVML encodes it (12040 means 12.4)."""

    @abstractmethod
    def device_count(self) -> int: ...

    @abstractmethod
    def device_uuid(self, index: int) -> str: ...

    @abstractmethod
    def device_name(self, index: int) -> str: ...

    @abstractmethod
    def memory_info(self, index: int) -> MemoryInfo: ...

    @abstractmethod
    def utilization(self, index: int) -> Utilization: ...

    @abstractmethod
    def power_mw(self, index: int) -> int:
        """Current power draw in milliwatts."""

    @abstractmethod
    def energy_mj(self, index: int) -> int:
        """Total energy consumed since the driver was loaded, millijoules (monotonic counter)."""

    @abstractmethod
    def temperature_c(self, index: int) -> int:
        """GPU core temperature, degrees Celsius."""

    @abstractmethod
    def slowdown_temperature_c(self, index: int) -> int:
        """``NVML_TEMPERATURE_THRESHOLD_SLOWDOWN``: the temperature where the GPU slows down."""

    @abstractmethod
    def sm_clock_mhz(self, index: int) -> int: ...

    @abstractmethod
    def throttle_reasons(self, index: int) -> int:
        """Current clock event (throttle) reasons, a bitmask (see :data:`THROTTLE_REASONS`)."""

    @abstractmethod
    def compute_processes(self, index: int) -> list[ProcessInfo]: ...

    @abstractmethod
    def volatile_uncorrected_ecc_errors(self, index: int) -> int:
        """Uncorrected ECC errors since the last driver load (volatile counter)."""

    @abstractmethod
    def retired_pages_pending(self, index: int) -> bool:
        """True when retired pages wait for a reboot or driver reload to take effect."""

    @abstractmethod
    def remapped_rows(self, index: int) -> RemappedRows: ...


def _translate(op: str, exc: Exception, pynvml: Any) -> NvmlError:
    """A pynvml exception as an NvmlError, with the transient flag and "not supported" class."""
    code = getattr(exc, "value", None)
    message = f"{op}: {exc}"
    if code == NVML_ERROR_NOT_SUPPORTED:
        return NvmlNotSupportedError(message)
    if not isinstance(exc, pynvml.NVMLError):  # e.g. NVMLLibraryMismatchError
        return NvmlError(message)
    return NvmlError(message, transient=code in TRANSIENT_NVML_ERRORS)


class RealNvml(NvmlInterface):
    """:class:`NvmlInterface` over the real NVML library through ``pynvml``."""

    description = "pynvml"

    def __init__(self) -> None:
        self._pynvml: Any = None
        self._handles: dict[int, Any] = {}

    def _call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except Exception as e:  # pynvml raises NVMLError subclasses, plus a mismatch error
            if isinstance(e, NvmlError):
                raise
            if self._pynvml is not None and isinstance(
                e, (self._pynvml.NVMLError, getattr(self._pynvml, "NVMLLibraryMismatchError", ()))
            ):
                raise _translate(op, e, self._pynvml) from e
            raise

    def _with_fallback(self, op: str, index: int, names: tuple[str, ...], *args: Any) -> Any:
        """Calls the first of ``names`` that the installed driver has (newer APIs first)."""
        p = self._pynvml
        for i, name in enumerate(names):
            fn = getattr(p, name, None)
            if fn is None:
                continue
            try:
                return fn(self._handle(index), *args)
            except p.NVMLError as e:
                if e.value != NVML_ERROR_FUNCTION_NOT_FOUND or i == len(names) - 1:
                    raise _translate(op, e, p) from e
            except getattr(p, "NVMLLibraryMismatchError", ()) as e:
                if i == len(names) - 1:
                    raise _translate(op, e, p) from e
        raise NvmlNotSupportedError(f"{op}: no NVML function available")

    def init(self) -> None:
        try:
            import pynvml
        except ImportError as e:  # pragma: no cover - nvidia-ml-py is a dependency
            raise NvmlError(f"pynvml is not installed: {e}") from e
        self._pynvml = pynvml
        self._call("nvmlInit", pynvml.nvmlInit)
        self._handles = {}

    def shutdown(self) -> None:
        if self._pynvml is not None:
            self._handles = {}
            self._call("nvmlShutdown", self._pynvml.nvmlShutdown)

    def _handle(self, index: int) -> Any:
        if self._pynvml is None:
            raise NvmlError("NVML is not initialised (call init() first)")
        if index not in self._handles:
            self._handles[index] = self._call(
                "nvmlDeviceGetHandleByIndex", self._pynvml.nvmlDeviceGetHandleByIndex, index
            )
        return self._handles[index]

    def _dev(self, name: str, index: int, *args: Any) -> Any:
        return self._call(name, getattr(self._pynvml, name), self._handle(index), *args)

    def driver_version(self) -> str:
        return str(self._call("nvmlSystemGetDriverVersion", self._pynvml.nvmlSystemGetDriverVersion))

    def cuda_driver_version(self) -> int:
        p = self._pynvml
        return int(self._call("nvmlSystemGetCudaDriverVersion", p.nvmlSystemGetCudaDriverVersion))

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount", self._pynvml.nvmlDeviceGetCount))

    def device_uuid(self, index: int) -> str:
        return str(self._dev("nvmlDeviceGetUUID", index))

    def device_name(self, index: int) -> str:
        return str(self._dev("nvmlDeviceGetName", index))

    def memory_info(self, index: int) -> MemoryInfo:
        m = self._dev("nvmlDeviceGetMemoryInfo", index)
        return MemoryInfo(total_bytes=int(m.total), free_bytes=int(m.free), used_bytes=int(m.used))

    def utilization(self, index: int) -> Utilization:
        u = self._dev("nvmlDeviceGetUtilizationRates", index)
        return Utilization(gpu_pct=float(u.gpu), memory_pct=float(u.memory))

    def power_mw(self, index: int) -> int:
        return int(self._dev("nvmlDeviceGetPowerUsage", index))

    def energy_mj(self, index: int) -> int:
        return int(self._dev("nvmlDeviceGetTotalEnergyConsumption", index))

    def temperature_c(self, index: int) -> int:
        names = ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature")
        return int(self._with_fallback("temperature", index, names, self._pynvml.NVML_TEMPERATURE_GPU))

    def slowdown_temperature_c(self, index: int) -> int:
        threshold = self._pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        return int(self._dev("nvmlDeviceGetTemperatureThreshold", index, threshold))

    def sm_clock_mhz(self, index: int) -> int:
        return int(self._dev("nvmlDeviceGetClockInfo", index, self._pynvml.NVML_CLOCK_SM))

    def throttle_reasons(self, index: int) -> int:
        names = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
        return int(self._with_fallback("throttle reasons", index, names))

    def compute_processes(self, index: int) -> list[ProcessInfo]:
        names = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2")
        procs = self._with_fallback("compute processes", index, names)
        return [ProcessInfo(pid=int(p.pid), used_memory_bytes=p.usedGpuMemory) for p in procs]

    def volatile_uncorrected_ecc_errors(self, index: int) -> int:
        p = self._pynvml
        return int(self._dev(
            "nvmlDeviceGetTotalEccErrors", index, p.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, p.NVML_VOLATILE_ECC
        ))

    def retired_pages_pending(self, index: int) -> bool:
        return bool(self._dev("nvmlDeviceGetRetiredPagesPendingStatus", index))

    def remapped_rows(self, index: int) -> RemappedRows:
        corr, unc, pending, failure = self._dev("nvmlDeviceGetRemappedRows", index)
        return RemappedRows(int(corr), int(unc), bool(pending), bool(failure))


#: Names a FakeNvml scenario to use instead of the real NVML (tests and demos on machines with
#: no GPU). Every report made through it says FAKE NVML. See :func:`benchflow.metrics.nvml_env.nvml_from_env`.
FAKE_NVML_ENV = "BENCHFLOW_FAKE_NVML"
