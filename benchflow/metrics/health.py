"""The GPU health check of one host, run before a backend is deployed on it.

:func:`check_health` asks NVML whether the driver loads, whether enough GPUs are present, and,
for each GPU: enough free memory, no foreign compute processes (unless allowed), no volatile
uncorrected ECC errors, no pending page retirement, no pending or failed row remapping, a
temperature below the slowdown threshold, and no hardware-slowdown, thermal or power-brake
throttling. A query the GPU does not support is a "not supported" note, never a failure.

It returns a :class:`HealthReport`; it never raises for an unhealthy or GPU-less host (the report
says ``NVML unavailable: <reason>``). It raises ``NvmlError(transient=True)`` only for transient
NVML failures (timeout, unknown error, not ready: see ``benchflow.metrics.nvml``), which are the
only ones worth retrying.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from benchflow import SCHEMA_VERSION
from benchflow.errors import NvmlError
from benchflow.metrics.nvml import (
    BAD_THROTTLE_MASK,
    NvmlInterface,
    NvmlNotSupportedError,
    RealNvml,
    decode_throttle_reasons,
)

logger = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_MIN_FREE_MEMORY_BYTES = 1 * GIB


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="what was checked, e.g. ecc_errors")
    ok: bool = Field(..., description="False only for a real problem; unsupported queries are ok")
    detail: str = Field("", description="what was found, readable")
    supported: bool = Field(True, description="False when the GPU or driver cannot answer this query")


class DeviceHealth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(..., ge=0, description="NVML device index")
    uuid: str | None = None
    name: str | None = None
    memory_total_bytes: int | None = Field(None, ge=0)
    memory_free_bytes: int | None = Field(None, ge=0)
    temperature_c: int | None = None
    checks: list[Check] = Field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)


class HealthReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    healthy: bool
    hostname: str
    checked_at: datetime = Field(..., description="UTC")
    nvml_source: str = Field(..., description="which NVML implementation answered")
    fake_nvml: bool = Field(False, description="True when a FakeNvml answered: not a real GPU")
    nvml_available: bool
    driver_version: str | None = None
    cuda_version: str | None = None
    error: str | None = None
    device_count: int | None = Field(None, ge=0)
    min_devices: int = Field(1, ge=0)
    devices: list[DeviceHealth] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list, description="one line per failed check")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    def render(self) -> str:
        """The report as readable text (what ``benchflow health`` prints)."""
        return render_report(self)


@dataclass(frozen=True)
class _Policy:
    min_free_memory_bytes: int
    allow_foreign_processes: bool
    allowed_pids: frozenset[int]


def check_health(
    nvml: NvmlInterface | None = None,
    *,
    min_devices: int = 1,
    devices: list[int] | None = None,
    min_free_memory_bytes: int = DEFAULT_MIN_FREE_MEMORY_BYTES,
    allow_foreign_processes: bool = False,
    allowed_pids: Iterable[int] = (),
) -> HealthReport:
    """Checks this host's GPUs (all, or the ``devices`` indices). See the module docstring."""
    nvml = nvml if nvml is not None else RealNvml()
    head = {
        "hostname": socket.gethostname(),
        "checked_at": datetime.now(timezone.utc),
        "nvml_source": getattr(nvml, "description", type(nvml).__name__),
        "fake_nvml": bool(getattr(nvml, "is_fake", False)),
        "min_devices": min_devices,
    }
    try:
        nvml.init()
    except NvmlError as e:
        if e.transient:
            raise
        error = f"NVML unavailable: {e}"
        logger.info("health check: %s", error)
        return HealthReport(healthy=False, nvml_available=False, error=error, reasons=[error], **head)
    policy = _Policy(int(min_free_memory_bytes), allow_foreign_processes, frozenset(int(p) for p in allowed_pids))
    try:
        report = _check_host(nvml, head, min_devices, devices, policy)
    finally:
        try:
            nvml.shutdown()
        except NvmlError as e:
            logger.warning("NVML shutdown failed: %s", e)
    logger.info("health check: %s (%d reason(s))", "healthy" if report.healthy else "UNHEALTHY", len(report.reasons))
    return report


def _optional(fn: Callable[[], object]) -> object | None:
    """A system-level fact, or None when unsupported or (non-transiently) failing."""
    try:
        return fn()
    except NvmlError as e:
        if e.transient:
            raise
        logger.debug("health check: %s", e)
        return None


def _cuda_version(code: object | None) -> str | None:
    if not isinstance(code, int) or code <= 0:
        return None
    return f"{code // 1000}.{(code % 1000) // 10}"


def _check_host(
    nvml: NvmlInterface, head: dict, min_devices: int, devices: list[int] | None, policy: _Policy
) -> HealthReport:
    driver = _optional(nvml.driver_version)
    cuda = _cuda_version(_optional(nvml.cuda_driver_version))
    facts = {"nvml_available": True, "driver_version": driver, "cuda_version": cuda, **head}
    try:
        count = nvml.device_count()
    except NvmlError as e:
        if e.transient:
            raise
        error = f"cannot count GPUs: {e}"
        return HealthReport(healthy=False, error=error, reasons=[error], **facts)
    wanted = list(range(count)) if devices is None else list(devices)
    reasons = [f"GPU {i} not present ({count} GPU(s) found)" for i in wanted if not 0 <= i < count]
    present = [i for i in wanted if 0 <= i < count]
    if len(present) < min_devices:
        reasons.insert(0, f"found {len(present)} usable GPU(s), need at least {min_devices}")
    results = [_check_device(nvml, i, policy) for i in present]
    for dev in results:
        for c in dev.checks:
            if not c.ok:
                reasons.append(f"GPU {dev.index} ({dev.uuid or 'uuid unknown'}): {c.name}: {c.detail}")
    return HealthReport(healthy=not reasons, device_count=count, devices=results, reasons=reasons, **facts)


def _run_check(name: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    try:
        ok, detail = fn()
    except NvmlNotSupportedError:
        return Check(name=name, ok=True, detail="not supported", supported=False)
    except NvmlError as e:
        if e.transient:
            raise
        return Check(name=name, ok=False, detail=f"NVML error: {e}")
    return Check(name=name, ok=ok, detail=detail)


def _check_device(nvml: NvmlInterface, index: int, policy: _Policy) -> DeviceHealth:
    dev = DeviceHealth(index=index)
    try:
        dev.uuid = nvml.device_uuid(index)
        dev.name = nvml.device_name(index)
    except NvmlError as e:
        if e.transient:
            raise
        dev.checks.append(Check(name="device", ok=False, detail=f"NVML error: {e}"))
        return dev
    dev.checks = [
        _run_check("free_memory", lambda: _free_memory(nvml, dev, policy)),
        _run_check("foreign_processes", lambda: _foreign_processes(nvml, index, policy)),
        _run_check("ecc_errors", lambda: _ecc(nvml, index)),
        _run_check("retired_pages", lambda: _retired_pages(nvml, index)),
        _run_check("row_remapping", lambda: _row_remapping(nvml, index)),
        _run_check("temperature", lambda: _temperature(nvml, dev)),
        _run_check("throttle_reasons", lambda: _throttle(nvml, index)),
    ]
    return dev


def _free_memory(nvml: NvmlInterface, dev: DeviceHealth, policy: _Policy) -> tuple[bool, str]:
    m = nvml.memory_info(dev.index)
    dev.memory_total_bytes, dev.memory_free_bytes = m.total_bytes, m.free_bytes
    ok = m.free_bytes >= policy.min_free_memory_bytes
    need = policy.min_free_memory_bytes / GIB
    detail = f"{m.free_bytes / GIB:.1f} GiB free of {m.total_bytes / GIB:.1f} GiB (need >= {need:.1f} GiB)"
    return ok, detail


def _foreign_processes(nvml: NvmlInterface, index: int, policy: _Policy) -> tuple[bool, str]:
    foreign = [p for p in nvml.compute_processes(index) if p.pid not in policy.allowed_pids]
    if not foreign:
        return True, "none"
    parts = [
        f"pid {p.pid}" + (f" ({p.used_memory_bytes / GIB:.1f} GiB)" if p.used_memory_bytes is not None else "")
        for p in foreign
    ]
    detail = f"{len(foreign)} foreign compute process(es): " + ", ".join(parts)
    if policy.allow_foreign_processes:
        return True, detail + " (allowed by policy)"
    return False, detail


def _ecc(nvml: NvmlInterface, index: int) -> tuple[bool, str]:
    n = nvml.volatile_uncorrected_ecc_errors(index)
    return n == 0, f"{n} volatile uncorrected ECC error(s)"


def _retired_pages(nvml: NvmlInterface, index: int) -> tuple[bool, str]:
    if nvml.retired_pages_pending(index):
        return False, "page retirement pending (reset the GPU or reload the driver)"
    return True, "none pending"


def _row_remapping(nvml: NvmlInterface, index: int) -> tuple[bool, str]:
    r = nvml.remapped_rows(index)
    problems = []
    if r.failure:
        problems.append(f"row remapping failed ({r.uncorrected} uncorrected, {r.corrected} corrected rows)")
    if r.pending:
        problems.append("row remapping pending (reset the GPU)")
    if problems:
        return False, "; ".join(problems)
    return True, f"{r.corrected} corrected, {r.uncorrected} uncorrected rows remapped; none pending"


def _temperature(nvml: NvmlInterface, dev: DeviceHealth) -> tuple[bool, str]:
    t = nvml.temperature_c(dev.index)
    dev.temperature_c = t
    try:
        limit = nvml.slowdown_temperature_c(dev.index)
    except NvmlNotSupportedError:
        return True, f"{t} C (slowdown threshold not supported)"
    if t >= limit:
        return False, f"{t} C, at or above the slowdown threshold {limit} C"
    return True, f"{t} C (slowdown at {limit} C)"


def _throttle(nvml: NvmlInterface, index: int) -> tuple[bool, str]:
    mask = nvml.throttle_reasons(index)
    bad = decode_throttle_reasons(mask & BAD_THROTTLE_MASK)
    active = decode_throttle_reasons(mask)
    if bad:
        return False, "slowed by " + ", ".join(bad)
    return True, ", ".join(active) if active else "none"


_MARK = {True: "ok  ", False: "FAIL"}


def render_report(report: HealthReport) -> str:
    """Readable text for a report: verdict, host facts, one line per check, the reasons."""
    lines = []
    if report.fake_nvml:
        source = report.nvml_source if "FAKE" in report.nvml_source else f"FAKE NVML ({report.nvml_source})"
        lines.append(f"*** {source}: simulated GPUs, not real hardware ***")
    verdict = "HEALTHY" if report.healthy else "UNHEALTHY"
    lines.append(f"GPU health: {verdict}  (host {report.hostname}, {report.checked_at.isoformat(timespec='seconds')})")
    if report.nvml_available:
        lines.append(
            f"NVML: {report.nvml_source}, driver {report.driver_version or '?'}, CUDA {report.cuda_version or '?'}, "
            f"{report.device_count if report.device_count is not None else '?'} GPU(s) "
            f"(need {report.min_devices})"
        )
    if report.error:
        lines.append(f"error: {report.error}")
    for dev in report.devices:
        mem = ""
        if dev.memory_free_bytes is not None and dev.memory_total_bytes is not None:
            mem = f"  {dev.memory_free_bytes / GIB:.1f}/{dev.memory_total_bytes / GIB:.1f} GiB free"
        temp = f"  {dev.temperature_c} C" if dev.temperature_c is not None else ""
        lines.append(f"GPU {dev.index}  {dev.name or '?'}  {dev.uuid or '?'}{mem}{temp}")
        for c in dev.checks:
            mark = "n/a " if not c.supported else _MARK[c.ok]
            lines.append(f"  [{mark}] {c.name}: {c.detail}")
    if report.reasons:
        lines.append("reasons:")
        lines.extend(f"  - {r}" for r in report.reasons)
    return "\n".join(lines)
