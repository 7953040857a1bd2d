"""The steps the campaign engine calls: plain callables, so ``flows/`` passes Prefect tasks in and
tests pass plain functions in.

Every step belongs to one campaign: the caller binds the results store, the campaign id and the
spec into the callables (``functools.partial`` or a closure); the engine passes only what changes
from call to call. A step reports failure by raising:

* ``deploy`` raises :class:`~benchflow.errors.BackendStartError` when the backend never becomes
  ready (it has stopped what it started by then);
* any ``persist_*`` step raises :class:`~benchflow.errors.ResultsNotStoredError` when neither the
  store nor the spool could take the write: the engine then stops the campaign cleanly;
* ``gpu_slots(backend)`` raises :class:`~benchflow.gpu_slots.GpuSlotError` on entry when the slots
  cannot be taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from logging import Logger, LoggerAdapter
from typing import TYPE_CHECKING, Any, Protocol, Union

from benchflow.launch.base import Launcher
from benchflow.results_types import AggregateRow, CellResult, CellRow, CellSummary, ComparisonRow
from benchflow.spec import BackendSpec, Cell

if TYPE_CHECKING:  # the runner pulls in pandas and the load generator; the engine needs only the type
    from benchflow.runner import CellOutcome

#: Returns None while the campaign may go on, else why it must stop (a cancel request, a signal).
StopCheck = Callable[[], "str | None"]

log = logging.getLogger("benchflow.engine")


def _no_stop() -> str | None:
    return None


def _ignore(*_: object, **__: object) -> None:
    return None


def _none(*_: object) -> None:
    return None


def _no_slots(backend: BackendSpec) -> AbstractContextManager[list[int]]:
    return nullcontext([])


#: Where the engine logs: a logger, or Prefect's run logger (a ``LoggerAdapter``).
EngineLogger = Union[Logger, LoggerAdapter]
#: A GPU health report: ``healthy``, ``reasons``, ``devices`` (see :mod:`benchflow.health`).
HealthReport = dict[str, Any]


class StoredRows(Protocol):
    """``stored()``: the campaign's stored cells and their summaries by cell id."""

    def __call__(self) -> tuple[list[CellRow], dict[str, CellSummary]]: ...


class Aggregate(Protocol):
    def __call__(self, rows: list[CellResult], metrics: list[str], seed: int) -> list[AggregateRow]: ...


class Compare(Protocol):
    def __call__(self, rows: list[CellResult], metrics: list[str], baseline: str, tolerance: float,
                 seed: int) -> list[ComparisonRow]: ...


class Publish(Protocol):
    def __call__(self, campaign: dict[str, str], cells: list[CellRow], aggregates: list[AggregateRow],
                 comparisons: list[ComparisonRow]) -> str: ...


@dataclass
class BackendSteps:
    """What one backend's lifecycle needs (see :func:`benchflow.engine.run_backend`)."""

    #: ``deploy(backend) -> launcher``, started and ready (raises BackendStartError otherwise).
    deploy: Callable[[BackendSpec], Launcher]
    #: ``teardown(launcher, grace_s) -> str``: stops the backend (idempotent) and returns its whole log.
    teardown: Callable[[Launcher, float], str]
    #: ``run_cell(backend, cell, launcher, should_stop) -> CellOutcome``; never raises for a failed cell.
    run_cell: Callable[[BackendSpec, Cell, Launcher, StopCheck], CellOutcome]
    #: ``persist_cell(cell, row, summary, artifacts)``; ``summary`` is the runner's
    #: (``CellOutcome.summary``, a dict the store validates into a :class:`CellSummary`), or None.
    persist_cell: Callable[[Cell, CellRow, CellSummary | dict[str, Any] | None, dict[str, bytes]], None]
    #: ``persist_backend_log(backend_name, text)``: the backend's whole log (every start of it).
    persist_backend_log: Callable[[str, str], None] = _ignore
    #: ``health(backend) -> report dict`` (``healthy``, ``reasons``, ``devices``); called only for
    #: backends that need a GPU. None: no gate.
    health: Callable[[BackendSpec], HealthReport] | None = None
    #: ``persist_health(report)``.
    persist_health: Callable[[HealthReport], None] = _ignore
    #: ``after_deploy(backend, launcher)``: e.g. record the image digest of a container.
    after_deploy: Callable[[BackendSpec, Launcher], None] = _ignore
    #: ``progress(note)``: one call per cell that is done (measured, failed or skipped).
    progress: Callable[[str], None] = _ignore
    #: polled between cells and handed to ``run_cell`` as ``should_stop``.
    cancel_requested: StopCheck = _no_stop
    #: ``sleep(seconds)``: the start-up grace (injected so tests do not wait).
    sleep: Callable[[float], None] = time.sleep
    #: ``gpu_slots(backend)``: a context manager held from the health gate to the teardown.
    gpu_slots: Callable[[BackendSpec], AbstractContextManager[object]] = _no_slots
    #: where the engine logs (flows pass Prefect's run logger, so the lines reach the UI).
    logger: EngineLogger = field(default_factory=lambda: log)
    #: ``stored_cell(cell_id) -> {"status", "summary"} | None``: a stored cell (a resumed sweep or
    #: SLO-capacity search reuses the cells it derived before). None: nothing is reused.
    stored_cell: Callable[[str], "dict[str, Any] | None"] = _none
    #: ``persist_artifact(name, data)``: a campaign-level file (an SLO capacity's JSON).
    persist_artifact: Callable[[str, bytes], None] = _ignore


@dataclass
class FinishSteps:
    """What the end of a campaign needs (see :func:`benchflow.engine.finish_campaign`)."""

    #: ``replay_spool() -> None | str``: None when nothing of this campaign is left in the spool, else why.
    replay_spool: Callable[[], "str | None"]
    #: ``stored() -> (cells, summaries)``: the campaign's stored cell rows and ``cell_id -> summary``
    #: (``store.cell_records`` / ``store.summary_records``; raises StorageError).
    stored: StoredRows
    #: ``aggregate(rows, metrics, seed) -> aggregate rows``.
    aggregate: Aggregate
    #: ``compare(rows, metrics, baseline, tolerance, seed) -> comparison rows``.
    compare: Compare
    #: ``persist_analysis(aggregates, comparisons)``.
    persist_analysis: Callable[[list[AggregateRow], list[ComparisonRow]], None]
    #: ``publish(campaign_row, cells, aggregates, comparisons) -> markdown``.
    publish: Publish
    #: ``persist_report(markdown)``.
    persist_report: Callable[[str], None]
    #: ``set_status(status)``: the campaign's final status in the results database.
    set_status: Callable[[str], None]
    #: ``describe() -> str``: where the results are, for the log.
    describe: Callable[[], str] = lambda: "the results store"
    #: ``spool_note() -> str``: how many writes wait in the spool and where.
    spool_note: Callable[[], str] = lambda: "writes wait in the spool"
    logger: EngineLogger = field(default_factory=lambda: log)
