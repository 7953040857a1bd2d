"""Samples NVML counters of each GPU while a benchmark runs.

Rows use the tidy sample format (``benchflow.metrics.samples``) with ``source="gpu"`` and labels
``{"gpu": "<index>", "uuid": "GPU-..."}``. Metrics, units in the names:

========================== ====================================================================
gpu_utilization_pct        percent of time a kernel was running (NVML utilization.gpu)
gpu_memory_utilization_pct percent of time device memory was read or written (utilization.memory)
gpu_memory_used_bytes      device memory in use
gpu_memory_total_bytes     device memory size
gpu_power_w                power draw, watts
gpu_energy_mj              total energy counter since driver load, millijoules (monotonic)
gpu_temperature_c          GPU core temperature
gpu_sm_clock_mhz           SM clock
gpu_throttle_reasons       clock event reasons bitmask; label ``reasons`` holds the decoded
                           names, comma-separated (empty when none)
========================== ====================================================================

NVML calls block, so they run on one dedicated worker thread (never on the event loop). A query
the GPU does not support is skipped from then on (listed in ``unsupported``); any other NVML
failure is a gap. When NVML cannot be initialised the sampler records one gap and samples
nothing, unless ``strict=True``, when ``start()`` raises the ``NvmlError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from benchflow.errors import NvmlError
from benchflow.metrics.nvml import NvmlInterface, NvmlNotSupportedError, RealNvml, decode_throttle_reasons
from benchflow.metrics.periodic import PeriodicSampler
from benchflow.metrics.samples import Instant, Row, labels_json

logger = logging.getLogger(__name__)

T = TypeVar("T")

GPU_METRICS = (
    "gpu_utilization_pct", "gpu_memory_utilization_pct", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
    "gpu_power_w", "gpu_energy_mj", "gpu_temperature_c", "gpu_sm_clock_mhz", "gpu_throttle_reasons",
)

#: A reader: NVML index -> [(metric, value, extra labels)].
_Reader = Callable[[NvmlInterface, int], list[tuple[str, float, dict[str, str]]]]


def _memory(n: NvmlInterface, i: int) -> list[tuple[str, float, dict[str, str]]]:
    m = n.memory_info(i)
    return [("gpu_memory_used_bytes", float(m.used_bytes), {}), ("gpu_memory_total_bytes", float(m.total_bytes), {})]


def _utilization(n: NvmlInterface, i: int) -> list[tuple[str, float, dict[str, str]]]:
    u = n.utilization(i)
    return [("gpu_utilization_pct", u.gpu_pct, {}), ("gpu_memory_utilization_pct", u.memory_pct, {})]


def _throttle(n: NvmlInterface, i: int) -> list[tuple[str, float, dict[str, str]]]:
    mask = n.throttle_reasons(i)
    return [("gpu_throttle_reasons", float(mask), {"reasons": ",".join(decode_throttle_reasons(mask))})]


#: (query name used in notes, reader). One NVML query each.
_READERS: tuple[tuple[str, _Reader], ...] = (
    ("utilization", _utilization),
    ("memory", _memory),
    ("power", lambda n, i: [("gpu_power_w", n.power_mw(i) / 1000.0, {})]),
    ("energy", lambda n, i: [("gpu_energy_mj", float(n.energy_mj(i)), {})]),
    ("temperature", lambda n, i: [("gpu_temperature_c", float(n.temperature_c(i)), {})]),
    ("sm_clock", lambda n, i: [("gpu_sm_clock_mhz", float(n.sm_clock_mhz(i)), {})]),
    ("throttle_reasons", _throttle),
)


class NvmlSampler(PeriodicSampler):
    """Samples every GPU (or the ``devices`` indices) every ``interval_s``. See the module doc."""

    def __init__(
        self,
        nvml: NvmlInterface | None = None,
        devices: Sequence[int] | None = None,
        *,
        interval_s: float = 1.0,
        source: str = "gpu",
        strict: bool = False,
        final_sample: bool = True,
        stop_timeout_s: float = 5.0,
        max_rows: int | None = 5_000_000,
    ) -> None:
        super().__init__(
            source=source, interval_s=interval_s, final_sample=final_sample,
            stop_timeout_s=stop_timeout_s, max_rows=max_rows,
        )
        self.nvml = nvml if nvml is not None else RealNvml()
        self.requested_devices = list(devices) if devices is not None else None
        self.strict = strict
        #: (index, uuid) of the GPUs being sampled, known after start.
        self.devices: list[tuple[int, str]] = []
        #: (index, query) pairs the GPU does not support; they are no longer queried.
        self.unsupported: set[tuple[int, str]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._initialised = False

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="benchflow-nvml")
        try:
            self.devices = await self._in_thread(self._init_blocking)
        except NvmlError as e:
            if self.strict:
                await self._close()
                raise
            logger.warning("GPU sampler disabled: NVML unavailable: %s", e)
            self._gap(Instant.now(), f"NVML unavailable: {e}")

    def _init_blocking(self) -> list[tuple[int, str]]:
        self.nvml.init()
        self._initialised = True
        count = self.nvml.device_count()
        indices = self.requested_devices if self.requested_devices is not None else list(range(count))
        missing = [i for i in indices if not 0 <= i < count]
        if missing:
            raise NvmlError(f"GPU index {missing} not present ({count} GPU(s) found)")
        return [(i, self.nvml.device_uuid(i)) for i in indices]

    async def _close(self) -> None:
        if self._executor is None:
            return
        try:
            if self._initialised:
                await asyncio.wait_for(self._in_thread(self.nvml.shutdown), self.stop_timeout_s)
        except (NvmlError, TimeoutError) as e:
            logger.warning("NVML shutdown failed: %s", e)
        finally:
            self._initialised = False
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _poll(self) -> tuple[list[Row], list[str]]:
        if not self.devices:
            return [], []
        return await self._in_thread(self._read_all)

    def _read_all(self) -> tuple[list[Row], list[str]]:
        rows: list[Row] = []
        errors: list[str] = []
        for index, uuid in self.devices:
            base = {"gpu": str(index), "uuid": uuid}
            for query, reader in _READERS:
                if (index, query) in self.unsupported:
                    continue
                try:
                    values = reader(self.nvml, index)
                except NvmlNotSupportedError:
                    logger.info("GPU %d (%s): %s not supported; not sampled", index, uuid, query)
                    self.unsupported.add((index, query))
                    continue
                except NvmlError as e:
                    errors.append(f"GPU {index} ({uuid}) {query}: {e}")
                    continue
                for metric, value, extra in values:
                    rows.append((metric, labels_json({**base, **extra}), value))
        return rows, (["; ".join(errors)] if errors else [])
