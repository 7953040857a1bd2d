"""The campaign engine's steps built from Prefect tasks (the behaviour is in :mod:`benchflow.engine`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from benchflow.engine import BackendSteps, FinishSteps, StopCheck, restart_due  # noqa: F401 - restart_due re-exported
from benchflow.launch.base import Launcher
from benchflow.metrics.nvml import NvmlInterface
from benchflow.runner import CellOutcome
from benchflow.spec import CampaignSpec, Cell
from benchflow.spec import BackendSpec
from benchflow.store.results import Results
from tasks.analysis import aggregate, compare
from tasks.artifacts import Progress, publish_results
from tasks.backend import deploy_backend, teardown_backend
from tasks.cell import outcome_of, run_cell
from tasks.concurrency import gpu_slots
from tasks.docker import record_image_digest
from tasks.health import gpu_health
from tasks.persist import (
    persist_analysis, persist_backend_log, persist_cell, persist_health, persist_report, replay_spool,
)


def gpu_indices(backend: BackendSpec) -> list[int] | None:
    """The GPU indices ``backend`` uses on this host, as the GPU slots see them (UUIDs mapped
    through NVML); None means every GPU of the host."""
    if backend.gpus is None or backend.gpus == "all":
        return None
    from benchflow.gpu_slots import LocalGpus, backend_gpu_indices
    from benchflow.metrics.nvml_env import nvml_from_env

    return backend_gpu_indices(backend, uuid_to_index=LocalGpus(nvml_from_env()).uuid_to_index) or None


def _nvml_for(backend: BackendSpec) -> NvmlInterface | None:
    if not backend.needs_gpu:
        return None
    from benchflow.metrics.nvml_env import nvml_from_env

    return nvml_from_env()


def backend_steps(results: Results, spec: CampaignSpec, cid: str, workdir: Path, progress: Progress | None,
                  cancel_requested: StopCheck) -> BackendSteps:
    """Steps for :func:`benchflow.engine.run_backend` / ``run_campaign``: each one a task run."""
    samplers: dict[str, tuple[NvmlInterface | None, list[int] | None]] = {}

    def health(backend: BackendSpec) -> dict[str, Any]:
        indices = gpu_indices(backend)
        return gpu_health(min_devices=len(indices) if indices else 1, devices=indices,
                          min_free_gib=spec.health.min_free_memory_gib,
                          allow_foreign_processes=spec.health.allow_foreign_processes)

    def cell(backend: BackendSpec, c: Cell, launcher: Launcher, should_stop: StopCheck) -> CellOutcome:
        if backend.name not in samplers:
            samplers[backend.name] = (_nvml_for(backend), gpu_indices(backend))
        nvml, indices = samplers[backend.name]
        if progress is not None:
            progress.cell_started(f"{c.backend} {c.load_point.label} rep {c.repetition}")
        return outcome_of(run_cell(spec, c, launcher, nvml=nvml, gpu_indices=indices, should_stop=should_stop,
                                   return_state=True))

    stored: dict[str, dict[str, Any]] = {}

    def stored_cell(cell_id: str) -> dict[str, Any] | None:
        """A cell stored before this run (read once: the engine remembers what this run measures)."""
        from benchflow.errors import StorageError

        if not stored:
            try:
                rows = results.store.summaries(cid)
            except StorageError as e:  # such cells are measured again; their new rows replace the old ones
                get_run_logger().warning("stored cells could not be read (%s); measuring them again", e)
                return None
            stored.update({r["cell_id"]: {"status": r["status"], "summary": r.get("summary") or {}} for r in rows})
            stored.setdefault("", {})  # read once, even when nothing is stored
        return stored.get(cell_id)

    def after_deploy(backend: BackendSpec, launcher: Launcher) -> None:
        if getattr(launcher, "image_digest", None):
            record_image_digest(results, cid, backend, launcher)

    return BackendSteps(
        deploy=lambda b: deploy_backend(b, spec.model.name, cid, workdir / "logs", workdir / "processes"),
        teardown=teardown_backend,
        run_cell=cell,
        persist_cell=lambda c, row, summary, artifacts: persist_cell(results, cid, c, row, summary, artifacts),
        persist_backend_log=lambda name, text: persist_backend_log(results, cid, name, text),
        health=health,
        persist_health=lambda report: persist_health(results, report, cid),
        after_deploy=after_deploy,
        progress=progress.advance if progress is not None else (lambda note: None),
        cancel_requested=cancel_requested,
        gpu_slots=gpu_slots,
        logger=get_run_logger(),
        stored_cell=stored_cell,
        persist_artifact=lambda name, data: results.persist_artifact(cid, name, data),
    )


def finish_steps(results: Results, cid: str, code_path: str | None = None) -> FinishSteps:
    """Steps for :func:`benchflow.engine.finish_campaign`."""
    return FinishSteps(
        replay_spool=functools.partial(replay_spool, results, cid),
        stored=lambda: (results.store.cell_records(cid), results.store.summary_records(cid)),
        aggregate=lambda rows, metrics, seed: aggregate(rows, metrics, seed=seed),
        compare=lambda rows, metrics, baseline, tolerance, seed: compare(rows, metrics, baseline, tolerance,
                                                                          seed=seed),
        persist_analysis=lambda aggregates, comparisons: persist_analysis(results, cid, aggregates, comparisons),
        publish=lambda campaign, cells, aggregates, comparisons: publish_results(cid, campaign, cells, aggregates,
                                                                                  comparisons, results=results),
        persist_report=lambda markdown: persist_report(results, cid, markdown, code_path=code_path),
        set_status=lambda status: results.finish_campaign(cid, status),
        describe=results.describe,
        spool_note=lambda: f"{results.spool.count(cid)} writes wait in the spool at {results.spool.root}",
        logger=get_run_logger(),
    )
