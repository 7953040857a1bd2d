"""Runs one cell: samplers (server ``/metrics``, NVML) alongside the load generator, then the
summary. Pure library code: the Prefect task around it only sets policy and logs.

A cell *fails* (status ``failed``, with a reason) when the backend died during it, when the
client could not reach the endpoint, or when not a single request succeeded. Its raw records
and samples are kept either way: a failed cell is data too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from benchflow import SCHEMA_VERSION
from benchflow.errors import EndpointUnreachableError
from benchflow.records import LoadRun, records_to_frame

log = logging.getLogger(__name__)

#: The gauge whose time above a threshold defines the active window (METRICS.md).
ACTIVE_GAUGE = "vllm:kv_cache_usage_perc"


@dataclass
class CellOutcome:
    cell_id: str
    backend: str
    load_label: str
    repetition: int
    status: str  # "completed" | "failed"
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    run: LoadRun | None = None
    summary: dict[str, Any] | None = None
    server_samples: pd.DataFrame | None = None
    gpu_samples: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def artifacts(self) -> dict[str, bytes]:
        """The cell's raw files, named as in the artifact layout."""
        out: dict[str, bytes] = {}
        if self.run is not None:
            out["requests.parquet"] = _parquet(records_to_frame(self.run.records))
        if self.server_samples is not None:
            out["server_metrics.parquet"] = _parquet(self.server_samples)
        if self.gpu_samples is not None:
            out["gpu.parquet"] = _parquet(self.gpu_samples)
        if self.summary is not None:
            out["summary.json"] = json.dumps(self.summary, indent=2, sort_keys=True, default=str).encode()
        return out


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def prompt_count(workload: Any) -> int:
    """How many distinct prompts a cell needs; the load generator cycles them beyond that."""
    return int(workload.warmup_requests) + int(workload.max_requests or 1000)


async def measure_cell(
    spec: Any,
    cell: Any,
    base_url: str,
    *,
    alive: Callable[[], str | None] = lambda: None,
    nvml: Any = None,
    gpu_indices: list[int] | None = None,
    scrape_interval_s: float = 1.0,
) -> CellOutcome:
    """Measures ``cell`` against ``base_url``. Never raises for a failed cell: returns it."""
    from benchflow.loadgen import check_endpoint, run_load
    from benchflow.metrics.prometheus import PrometheusScraper
    from benchflow.workload import make_prompts

    wl = spec.workload
    started = datetime.now(UTC)
    base = dict(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                repetition=cell.repetition, started_at=started)
    try:
        await check_endpoint(base_url, timeout_s=10.0)
    except EndpointUnreachableError as e:
        return CellOutcome(**base, status="failed", finished_at=datetime.now(UTC), error=str(e))

    prompts = make_prompts(wl, prompt_count(wl), cell.seed)
    scraper = PrometheusScraper.for_endpoint(base_url, interval_s=scrape_interval_s)
    gpu = _gpu_sampler(nvml, gpu_indices, scrape_interval_s)
    async with scraper.running(), (gpu.running() if gpu else contextlib.nullcontext()):
        run = await run_load(
            base_url, spec.model.name, prompts, cell.load_point, api=wl.api,
            warmup_requests=wl.warmup_requests, max_requests=wl.max_requests,
            max_duration_s=wl.max_duration_s, request_timeout_s=wl.request_timeout_s,
            temperature=wl.temperature, ignore_eos=wl.ignore_eos, seed=cell.seed,
        )
    outcome = CellOutcome(**base, status="completed", finished_at=datetime.now(UTC), run=run,
                          server_samples=scraper.frame(), gpu_samples=gpu.frame() if gpu else None)
    outcome.summary = summarize_cell(spec, outcome)
    outcome.error = _failure_reason(outcome, alive())
    if outcome.error:
        outcome.status = "failed"
    return outcome


def _gpu_sampler(nvml: Any, gpu_indices: list[int] | None, interval_s: float):
    if nvml is None or not gpu_indices:
        return None
    from benchflow.metrics.gpu import NvmlSampler

    return NvmlSampler(nvml, gpu_indices, interval_s=interval_s)


def summarize_cell(spec: Any, outcome: CellOutcome) -> dict[str, Any]:
    """The METRICS.md summary plus the active window and energy when samples allow."""
    from benchflow import stats

    summary = stats.summarize(outcome.run, slo=spec.slo or None, limits=spec.limits)
    summary["schema_version"] = SCHEMA_VERSION
    summary.update(_active_window(outcome))
    summary.update(_energy(outcome, summary))
    return summary


def _active_window(outcome: CellOutcome) -> dict[str, Any]:
    from benchflow import stats

    df = outcome.server_samples
    if df is None or df.empty:
        return {}
    gauge = df[df["metric"] == ACTIVE_GAUGE]
    if gauge.empty:
        return {}
    window = stats.active_window(gauge["t_ns"].tolist(), gauge["value"].tolist())
    return stats.active_window_summary(outcome.run, window)


def _energy(outcome: CellOutcome, summary: dict[str, Any]) -> dict[str, Any]:
    from benchflow import stats

    df = outcome.gpu_samples
    if df is None or df.empty:
        return {}
    counter = df[df["metric"] == "gpu_energy_mj"]
    if counter.empty:
        return {}
    window = stats.measurement_window(outcome.run)
    joules = sum(
        stats.energy_joules(g["t_ns"].tolist(), g["value"].tolist(), window=window) or 0.0
        for _, g in counter.groupby("labels")
    )
    tokens = summary.get("total_output_tokens") or 0
    return {"energy_j": joules, "joules_per_output_token": joules / tokens if tokens else None}


def _failure_reason(outcome: CellOutcome, backend_dead: str | None) -> str | None:
    if backend_dead is not None:
        return f"backend died during the cell ({backend_dead})"
    summary = outcome.summary or {}
    if not summary.get("completed"):
        errors = summary.get("errors") or {}
        detail = ", ".join(f"{k}×{v}" for k, v in sorted(errors.items())) or "no requests finished"
        sample = next((r.error_message for r in outcome.run.records if r.error_message), None)
        return f"no request succeeded ({detail})" + (f": {sample}" if sample else "")
    return None


def measure_cell_sync(*args: Any, **kwargs: Any) -> CellOutcome:
    """:func:`measure_cell` from synchronous code (a Prefect task thread, the CLI).

    A termination signal (Prefect raises a ``BaseException`` from its SIGTERM handler) that lands
    inside one of asyncio's own callbacks would be logged and swallowed by the loop, and the cell
    would run on. The loop's exception handler cancels the cell instead and re-raises it.
    """
    return asyncio.run(_propagating_fatal(measure_cell(*args, **kwargs)))


async def _propagating_fatal(coro: Any) -> Any:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    fatal: list[BaseException] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is not None and not isinstance(exc, Exception):
            fatal.append(exc)
            main.cancel()
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        return await coro
    except asyncio.CancelledError:
        if fatal:
            raise fatal[0] from None
        raise
