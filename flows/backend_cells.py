"""One backend's part of a campaign: health gate, deploy, its cells, teardown (always)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from benchflow.campaign import cell_row, failed_cell_row
from benchflow.errors import BackendStartError
from benchflow.gpu_slots import GpuSlotError
from tasks.backend import deploy_backend, teardown_backend
from tasks.cell import run_cell
from tasks.concurrency import gpu_slots
from tasks.docker import record_image_digest
from tasks.health import gpu_health
from tasks.persist import persist_backend_log, persist_cell, persist_health

#: How often a backend that died mid-campaign is started again for its remaining cells.
MAX_REDEPLOYS = 2


def gpu_indices(backend: Any) -> list[int] | None:
    """The GPU indices ``backend`` uses on this host, as the GPU slots see them (UUIDs mapped
    through NVML); None means every GPU of the host."""
    if backend.gpus is None or backend.gpus == "all":
        return None
    from benchflow.gpu_slots import LocalGpus, backend_gpu_indices
    from benchflow.metrics.nvml_env import nvml_from_env

    return backend_gpu_indices(backend, uuid_to_index=LocalGpus(nvml_from_env()).uuid_to_index) or None


def _health_gate(results: Any, spec: Any, backend: Any, todo: list[Any], cid: str) -> tuple[bool, dict]:
    logger = get_run_logger()
    if not backend.needs_gpu:
        logger.info("backend %s (kind %s) needs no GPU: GPU health check skipped", backend.name, backend.kind)
        return True, {}
    indices = gpu_indices(backend)
    report = gpu_health(min_devices=len(indices) if indices else 1, devices=indices,
                        min_free_gib=spec.health.min_free_memory_gib,
                        allow_foreign_processes=spec.health.allow_foreign_processes)
    persist_health(results, report, cid)
    if report.get("healthy"):
        return True, report
    reason = "GPU health check failed: " + "; ".join(report.get("reasons") or [report.get("error") or "unknown"])
    status = "skipped" if spec.health.on_unhealthy == "skip" else "failed"
    for cell in todo:
        persist_cell(results, cid, cell, failed_cell_row(cell, reason, status=status), None, {})
    logger.error("backend %s: %s; its %d cells are %s", backend.name, reason, len(todo), status)
    return False, report


def _nvml_for(backend: Any) -> Any:
    if not backend.needs_gpu:
        return None
    from benchflow.metrics.nvml_env import nvml_from_env

    return nvml_from_env()


def run_backend(results: Any, spec: Any, backend: Any, todo: list[Any], cid: str, workdir: Path,
                progress: Any) -> None:
    """One benchmark per GPU: holds the backend's GPU slot(s) from health gate to teardown."""
    try:
        with gpu_slots(backend):
            _run_backend(results, spec, backend, todo, cid, workdir, progress)
    except GpuSlotError as e:  # raised before the backend starts: nothing of it ran
        _fail_rest(results, cid, todo, f"backend {backend.name}: {e}", progress)


def _run_backend(results: Any, spec: Any, backend: Any, todo: list[Any], cid: str, workdir: Path,
                 progress: Any) -> None:
    logger = get_run_logger()
    healthy, report = _health_gate(results, spec, backend, todo, cid)
    if not healthy:
        progress.done += len(todo)
        return
    gpu_uuids = [d.get("uuid") for d in report.get("devices", [])]
    pending = list(todo)
    redeploys = 0
    while pending:
        try:
            launcher = deploy_backend(backend, spec.model.name, cid, workdir / "logs", workdir / "processes")
        except BackendStartError as e:
            _store_log(results, cid, backend, workdir, str(e))
            _fail_rest(results, cid, pending, f"backend {backend.name} never became ready: {e}", progress)
            return
        if getattr(launcher, "image_digest", None):
            record_image_digest(results, cid, backend, launcher)
        if backend.startup_grace_s:
            logger.info("backend %s ready; waiting its startup grace of %gs before the first cell",
                        backend.name, backend.startup_grace_s)
            time.sleep(backend.startup_grace_s)
        try:
            pending, died = _run_cells(results, spec, backend, pending, cid, launcher, gpu_uuids, progress)
        finally:
            logs = teardown_backend(launcher, getattr(backend, "stop_grace_s", 10.0))
            _store_log(results, cid, backend, workdir, logs)
        if pending and not died:
            logger.info("backend %s: restart policy %s: starting it afresh for its next cell", backend.name,
                        backend.restart)
        elif pending:
            redeploys += 1
            if redeploys > MAX_REDEPLOYS:
                _fail_rest(results, cid, pending, f"backend {backend.name} died {redeploys} times; giving up", progress)
                return
            logger.warning("backend %s died; starting it again for its %d remaining cells", backend.name, len(pending))


def _run_cells(results: Any, spec: Any, backend: Any, cells: list[Any], cid: str, launcher: Any,
               gpu_uuids: list[str], progress: Any) -> tuple[list[Any], bool]:
    """Runs cells until the backend dies or its restart policy asks for a fresh one; returns the
    cells still to run and whether the backend died."""
    nvml = _nvml_for(backend)
    indices = gpu_indices(backend)
    for i, cell in enumerate(cells):
        if i and restart_due(backend.restart, cells[i - 1], cell):
            return cells[i:], False
        log_start = len(launcher.logs())
        outcome = run_cell(spec, cell, launcher, nvml=nvml, gpu_indices=indices)
        artifacts = outcome.artifacts()
        artifacts["backend.log"] = launcher.logs()[log_start:].encode()
        persist_cell(results, cid, cell, cell_row(cell, outcome, gpu_uuids=gpu_uuids), outcome.summary, artifacts)
        progress.advance(f"{cell.backend} {cell.load_point.label} rep {cell.repetition}: {outcome.status}")
        if launcher.alive() is not None or outcome.status == "stalled":  # a stalled engine is a dead one
            return cells[i + 1:], True
    return [], False


def restart_due(policy: str, previous: Any, cell: Any) -> bool:
    """``restart`` (cold-start studies): ``per_cell`` redeploys before every cell but the first,
    ``per_repetition`` whenever the repetition changes, ``never`` never."""
    if policy == "per_cell":
        return True
    return policy == "per_repetition" and cell.repetition != previous.repetition


def _store_log(results: Any, cid: str, backend: Any, workdir: Path, fallback: str) -> None:
    """Stores the backend's whole log file (every start of it, in order) as an artifact."""
    path = workdir / "logs" / f"backend-{backend.name}.log"
    text = path.read_text(errors="replace") if path.exists() else fallback
    persist_backend_log(results, cid, backend.name, text)


def _fail_rest(results: Any, cid: str, cells: list[Any], reason: str, progress: Any) -> None:
    for cell in cells:
        persist_cell(results, cid, cell, failed_cell_row(cell, reason), None, {})
        progress.advance(f"{cell.backend} {cell.load_point.label} rep {cell.repetition}: failed")
