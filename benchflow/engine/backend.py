"""One backend's lifecycle: GPU slots -> health gate -> deploy -> ready -> start-up grace -> its cells
in order -> teardown (always). A backend that dies (or stalls) mid-campaign is deployed again for
its remaining cells, at most :data:`MAX_REDEPLOYS` times; its restart policy may ask for a fresh
one between cells. Prefect-free: every side effect goes through :class:`BackendSteps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchflow.campaign import FAILED_STATUSES, cell_row, failed_cell_row
from benchflow.engine import dynamic
from benchflow.engine.cells import LOG_TAIL_MARKER, restart_due, with_log_tail
from benchflow.engine.steps import BackendSteps
from benchflow.errors import BackendStartError, CampaignCancelled
from benchflow.gpu_slots import GpuSlotError
from benchflow.spec import CampaignSpec, Cell
from benchflow.spec import BackendSpec
from benchflow.launch.base import Launcher
from benchflow.engine.steps import HealthReport

if TYPE_CHECKING:
    from benchflow.runner import CellOutcome

#: How often a backend that died mid-campaign is started again for its remaining cells.
MAX_REDEPLOYS = 2


@dataclass
class BackendResult:
    """What happened to one backend's cells."""

    backend: str
    cells: int = 0          #: cells this call was given
    measured: int = 0       #: cells that ran against the backend (any status)
    failed: int = 0         #: cells stored as failed (measured or not)
    skipped: int = 0        #: cells skipped by the health gate
    deploys: int = 0        #: successful deploys
    redeploys: int = 0      #: deploys after the backend died
    gave_up: bool = False   #: it died more than MAX_REDEPLOYS times
    never_ready: bool = False
    unhealthy: bool = False
    #: SLO capacities found (aggregate rows, metric ``slo_capacity_rps``).
    capacities: list[dict[str, Any]] = field(default_factory=list)
    #: ``{"status", "summary"}`` of each cell a dynamic load point derived in this call, by id.
    derived: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)


def run_backend(steps: BackendSteps, spec: CampaignSpec, backend: BackendSpec, cells: list[Cell], *,
                workdir: Path | None = None, max_redeploys: int = MAX_REDEPLOYS) -> BackendResult:
    """Runs ``cells`` (all of ``backend``, in order) and stores each one through ``steps``.

    Holds the backend's GPU slot(s) from the health gate to the teardown. Returns what happened;
    raises :class:`~benchflow.errors.CampaignCancelled` when ``steps.cancel_requested`` (or a cell)
    says so, and :class:`~benchflow.errors.ResultsNotStoredError` from a persist step, in both cases
    after the backend is torn down. ``workdir``: the campaign's folder, whose
    ``logs/backend-<name>.log`` is stored whole after each teardown.
    """
    result = BackendResult(backend.name, cells=len(cells))
    try:
        with steps.gpu_slots(backend):
            _lifecycle(steps, spec, backend, list(cells), workdir, max_redeploys, result)
    except GpuSlotError as e:  # raised before the backend starts: nothing of it ran
        _fail_rest(steps, _stand_ins(steps, spec, backend, cells, result), f"backend {backend.name}: {e}", result)
    return result


def _lifecycle(steps: BackendSteps, spec: CampaignSpec, backend: BackendSpec, pending: list[Cell], workdir: Path | None,
               max_redeploys: int, result: BackendResult) -> None:
    logger = steps.logger
    pending = dynamic.finished(dynamic.DynamicRun(steps, spec, backend, result), pending)
    if not pending:
        return
    healthy, report = _health_gate(steps, spec, backend, pending, result)
    if not healthy:
        return
    gpu_uuids = [d.get("uuid") for d in report.get("devices", [])]
    while pending:
        _check_cancel(steps)
        try:
            launcher = steps.deploy(backend)
        except BackendStartError as e:
            _store_log(steps, backend, workdir, str(e))
            result.never_ready = True
            _fail_rest(steps, _stand_ins(steps, spec, backend, pending, result),
                       f"backend {backend.name} never became ready: {e}", result)
            return
        result.deploys += 1
        try:
            steps.after_deploy(backend, launcher)
            grace = float(getattr(backend, "startup_grace_s", 0) or 0)
            if grace:
                logger.info("backend %s ready; waiting its startup grace of %gs before the first cell",
                            backend.name, grace)
                steps.sleep(grace)
            pending, died = _run_cells(steps, spec, backend, pending, launcher, gpu_uuids, result)
        except BaseException:
            _teardown(steps, backend, launcher, workdir, quiet=True)
            raise
        _teardown(steps, backend, launcher, workdir)
        if not pending:
            return
        if died is None:
            logger.info("backend %s: restart policy %s: starting it afresh for its next cell", backend.name,
                        backend.restart)
            continue
        result.redeploys += 1
        if result.redeploys > max_redeploys:
            result.gave_up = True
            _fail_rest(steps, _stand_ins(steps, spec, backend, pending, result),
                       f"backend {backend.name} died {result.redeploys} times; giving up "
                                       f"(last: {died})", result)
            return
        logger.warning("backend %s died (%s); starting it again for its %d remaining cells", backend.name,
                       died, len(pending))


def _run_cells(steps: BackendSteps, spec: CampaignSpec, backend: BackendSpec, cells: list[Cell], launcher: Launcher,
               gpu_uuids: list[str], result: BackendResult) -> tuple[list[Cell], str | None]:
    """Runs cells until the backend dies or stalls, or its restart policy asks for a fresh one.
    Returns the cells still to run and, when the backend died or stalled, why. A dynamic load
    point's placeholder stays among them when the backend died while it ran (it resumes)."""
    def measure(cell: Cell, amend: Callable[[CellOutcome], None] | None = None) -> tuple[CellOutcome, str | None]:
        return _measure(steps, backend, cell, launcher, gpu_uuids, result, amend)

    for i, cell in enumerate(cells):
        if i and restart_due(backend.restart, cells[i - 1], cell):
            return cells[i:], None
        _check_cancel(steps)
        if getattr(cell.load_point, "dynamic", False):
            died = dynamic.run_dynamic(dynamic.DynamicRun(steps, spec, backend, result, measure), cell)
            if died is not None:
                return cells[i:], died
            steps.progress(_note(cell, "done"))
            continue
        outcome, died = _measure(steps, backend, cell, launcher, gpu_uuids, result)
        if died is not None:
            return cells[i + 1:], died
    return [], None


def _measure(steps: BackendSteps, backend: BackendSpec, cell: Cell, launcher: Launcher, gpu_uuids: list[str],
             result: BackendResult, amend: Callable[[CellOutcome], None] | None = None
             ) -> tuple[CellOutcome, str | None]:
    """Runs one cell and stores it. Returns its outcome and, when the backend died or stalled,
    why. ``amend(outcome)`` may add to the summary first (a derived cell's own keys)."""
    log_start = len(launcher.logs())
    outcome = steps.run_cell(backend, cell, launcher, steps.cancel_requested)
    log_slice = launcher.logs()[log_start:]
    dead = launcher.alive()
    with_log_tail(outcome, log_slice, dead)
    if amend is not None:
        amend(outcome)
    artifacts = outcome.artifacts()
    artifacts["backend.log"] = log_slice.encode()
    row = cell_row(cell, outcome, gpu_uuids=gpu_uuids)
    steps.persist_cell(cell, row, outcome.summary, artifacts)
    result.measured += 1
    result.failed += row["status"] in FAILED_STATUSES
    if amend is None:
        steps.progress(_note(cell, outcome.status))
    if outcome.status == "cancelled":
        raise CampaignCancelled(f"cancelled during cell {cell.backend} {cell.load_point.label} rep "
                                f"{cell.repetition}: {(outcome.error or 'cancel requested').splitlines()[0]}")
    if dead is not None:
        return outcome, dead
    if outcome.status == "stalled":
        steps.logger.warning("backend %s stalled during cell %s rep %d: treated as dead", backend.name,
                             cell.load_point.label, cell.repetition)
        return outcome, "stalled: " + (outcome.error or "no tokens").split(LOG_TAIL_MARKER)[0].strip()
    return outcome, None


def _health_gate(steps: BackendSteps, spec: CampaignSpec, backend: BackendSpec, cells: list[Cell],
                 result: BackendResult) -> tuple[bool, HealthReport]:
    logger = steps.logger
    if not getattr(backend, "needs_gpu", False) or steps.health is None:
        logger.info("backend %s (kind %s) needs no GPU: GPU health check skipped", backend.name,
                    getattr(backend, "kind", "?"))
        return True, {}
    report = steps.health(backend)
    steps.persist_health(report)
    if report.get("healthy"):
        return True, report
    reason = "GPU health check failed: " + "; ".join(report.get("reasons") or [report.get("error") or "unknown"])
    status = "skipped" if spec.health.on_unhealthy == "skip" else "failed"
    result.unhealthy = True
    for cell in _stand_ins(steps, spec, backend, cells, result):
        steps.persist_cell(cell, failed_cell_row(cell, reason, status=status), None, {})
        if status == "skipped":
            result.skipped += 1
        else:
            result.failed += 1
        steps.progress(_note(cell, status))
    logger.error("backend %s: %s; its %d cells are %s", backend.name, reason, len(cells), status)
    return False, report


def _check_cancel(steps: BackendSteps) -> None:
    reason = steps.cancel_requested()
    if reason:
        raise CampaignCancelled(reason)


def _note(cell: Cell, status: str) -> str:
    return f"{cell.backend} {cell.load_point.label} rep {cell.repetition}: {status}"


def _teardown(steps: BackendSteps, backend: BackendSpec, launcher: Launcher, workdir: Path | None, quiet: bool = False) -> None:
    """Stops the backend and stores its log. ``quiet`` (an error is already on its way out): a
    failure here is logged, so that it does not replace the error that says what went wrong."""
    try:
        logs = steps.teardown(launcher, float(getattr(backend, "stop_grace_s", 10.0)))
        _store_log(steps, backend, workdir, logs)
    except Exception as e:
        if not quiet:
            raise
        steps.logger.warning("backend %s: teardown or storing its log failed: %s", backend.name, e)


def _store_log(steps: BackendSteps, backend: BackendSpec, workdir: Path | None, fallback: str) -> None:
    """Stores the backend's whole log file (every start of it, in order) as an artifact."""
    path = Path(workdir) / "logs" / f"backend-{backend.name}.log" if workdir is not None else None
    text = path.read_text(errors="replace") if path is not None and path.exists() else fallback
    steps.persist_backend_log(backend.name, text)


def _stand_ins(steps: BackendSteps, spec: CampaignSpec, backend: BackendSpec, cells: list[Cell],
              result: BackendResult) -> list[Cell]:
    return dynamic.stand_ins(dynamic.DynamicRun(steps, spec, backend, result), cells)


def _fail_rest(steps: BackendSteps, cells: list[Cell], reason: str, result: BackendResult) -> None:
    for cell in cells:
        steps.persist_cell(cell, failed_cell_row(cell, reason), None, {})
        result.failed += 1
        steps.progress(_note(cell, "failed"))
