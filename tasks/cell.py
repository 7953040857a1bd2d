"""Run one cell: samplers alongside the load generator. Live measurement: never cached."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from benchflow.launch import Launcher
from benchflow.runner import CellOutcome, measure_cell_sync


@task(name="run-cell", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="run-cell-{cell.backend}-{cell.load_point.label}-rep{cell.repetition}")
def run_cell(spec: Any, cell: Any, launcher: Launcher, nvml: Any = None,
             gpu_indices: list[int] | None = None) -> CellOutcome:
    logger = get_run_logger()
    outcome = measure_cell_sync(spec, cell, launcher.url, alive=launcher.alive, nvml=nvml, gpu_indices=gpu_indices)
    s = outcome.summary or {}
    if outcome.status == "completed":
        logger.info("cell %s %s rep %d: %s ok, %s errors, p50 TTFT %s ms, %.2f req/s%s", cell.backend,
                    cell.load_point.label, cell.repetition, s.get("completed"), sum((s.get("errors") or {}).values()),
                    _r((s.get("ttft_ms") or {}).get("p50")), s.get("request_throughput") or 0.0,
                    f" — INVALID: {s['invalid']}" if s.get("invalid") else "")
    else:
        logger.error("cell %s %s rep %d failed: %s", cell.backend, cell.load_point.label, cell.repetition, outcome.error)
    return outcome


def _r(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"
