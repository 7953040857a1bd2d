"""Load points expanded while their backend runs: ``sweep`` and ``slo_capacity``.

The spec yields one placeholder cell for each (:mod:`benchflow.spec.dynamic`). The backend's
lifecycle hands it to :func:`run_dynamic`, which derives the real cells and measures each one
through the engine's own ``measure`` (the same ``run_cell`` and ``persist_cell`` steps as every
other cell: records, summary, storage, health, cancel and redeploy all apply).

* sweep: a synchronous cell (concurrency 1) and a saturating cell (closed loop at
  ``saturating_concurrency``), then ``points`` open-loop cells at rates spread evenly between the
  two measured request rates. Labels: ``<sweep>-sync``, ``<sweep>-max``, ``<sweep>-p1`` ...;
  each derived load point carries ``derived_from``, ``role`` and ``point``, and a point whose rate
  is above the saturating run's measured rate carries ``beyond_saturation: true``.
* slo_capacity: :func:`benchflow.stats.capacity.search_capacity` with a probe that measures an
  open-loop cell at the rate and repetition it asks for (label ``<name>-r<rate>``); the result
  (capacity, interval, every probe) is stored as ``capacity-<backend>-<label>.json`` and returned
  as an aggregate row (metric :data:`CAPACITY_METRIC`) for the campaign's finish.

Derived cell ids are content hashes of the placeholder's load point plus the derived role
(``point`` index, or probe rate), so a resumed campaign measures only missing cells: a sweep
reuses its stored synchronous and saturating cells, a search replays its stored probes. With
``measure=None`` nothing is measured (:class:`NotStored` when a cell is missing): that replay runs
before the backend is deployed, and a dynamic load point whose cells are all stored needs no deploy.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from benchflow.errors import BenchflowError, CampaignCancelled
from benchflow.spec import ConcurrencyLoad, RateLoad
from benchflow.spec.models import Cell, derived_cell

if TYPE_CHECKING:  # the engine's backend module imports this one
    from benchflow.engine.backend import BackendResult
    from benchflow.engine.steps import BackendSteps
    from benchflow.runner import CellOutcome
    from benchflow.spec import BackendSpec, CampaignSpec
    from benchflow.stats.capacity import ProbeOutcome

log = logging.getLogger(__name__)

#: The metric of the aggregate row that carries an SLO capacity (requests/s).
CAPACITY_METRIC = "slo_capacity_rps"
#: Stored statuses of a derived cell that count as measured (a saturated cell is measured and flagged).
DONE_STATUSES = ("completed", "saturated")

#: ``measure(cell, amend) -> (outcome, died)``; ``amend(outcome)`` adds to the summary before it is stored.
Measure = Callable[[Cell, "Callable[[CellOutcome], None] | None"], "tuple[CellOutcome, str | None]"]


class SweepConcurrency(ConcurrencyLoad):
    """The synchronous (concurrency 1) or saturating closed-loop cell of a sweep."""

    derived_from: str = Field(..., description="label of the sweep")
    role: Literal["sync", "saturating"] = Field(..., description="which of the two reference runs")

    @property
    def label(self) -> str:
        return f"{self.derived_from}-{'sync' if self.role == 'sync' else 'max'}"


class SweepRate(RateLoad):
    """One open-loop point of a sweep."""

    derived_from: str = Field(..., description="label of the sweep")
    role: Literal["point"] = "point"
    point: int = Field(..., ge=1, description="1-based index, in rising rate")
    beyond_saturation: bool = Field(False, description="rate above the saturating run's measured rate")

    @property
    def label(self) -> str:
        return f"{self.derived_from}-p{self.point}"


class ProbeRate(RateLoad):
    """One probe of an SLO-capacity search."""

    derived_from: str = Field(..., description="label of the search")
    role: Literal["probe"] = "probe"

    @property
    def label(self) -> str:
        return f"{self.derived_from}-r{self.rate:.4g}"


class NotStored(BenchflowError):
    """A replay (``measure=None``) needs ``cell``, which is not stored yet."""

    def __init__(self, cell: Cell):
        super().__init__(f"{cell.load_point.label} rep {cell.repetition} is not stored")
        self.cell = cell


class _Died(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class DynamicRun:
    """What expanding one placeholder needs: the engine's steps, the spec and backend, the
    backend's result (counts, ``derived`` memo, ``capacities``) and ``measure`` (None: replay)."""

    steps: BackendSteps
    spec: CampaignSpec
    backend: BackendSpec
    result: BackendResult
    measure: Measure | None = None

    def cell(self, placeholder: Cell, lp: ConcurrencyLoad | RateLoad, extra: dict[str, Any], repetition: int | None = None) -> Cell:
        common = self.spec.cell_common()
        rep = placeholder.repetition if repetition is None else repetition
        return derived_cell(common, self.backend.name, self.backend.content_hash(), placeholder.load_point, rep,
                            placeholder.index, self.spec.workload.seed, extra, measured=lp)

    def stored(self, cell_id: str) -> dict[str, Any] | None:
        """``{"status", "summary"}`` of a derived cell measured before (this run or a stored one)."""
        got = self.result.derived.get(cell_id)
        if got is None:
            reader = getattr(self.steps, "stored_cell", None)
            got = reader(cell_id) if reader is not None else None
        return got if got is not None and got.get("status") in DONE_STATUSES else None

    def get(self, cell: Cell, amend: Callable[[CellOutcome], None] | None = None) -> dict[str, Any]:
        """The stored ``{"status", "summary"}`` of ``cell``, measuring it first when needed."""
        got = self.stored(cell.id)
        if got is not None:
            return got
        if self.measure is None:
            raise NotStored(cell)
        outcome, died = self.measure(cell, amend)
        status = getattr(outcome, "status", "failed")
        got = {"status": status, "summary": dict(outcome.summary or {})}
        self.result.derived[cell.id] = got
        if died is not None:
            raise _Died(died)
        return got


def run_dynamic(run: DynamicRun, placeholder: Cell) -> str | None:
    """Measures (or replays) every cell ``placeholder`` derives; returns why the backend died,
    when it did (the placeholder is then run again after the redeploy), else None."""
    try:
        if placeholder.load_point.mode == "sweep":
            _sweep(run, placeholder)
        else:
            _slo_capacity(run, placeholder)
    except _Died as e:
        return e.reason
    return None


def finished(run: DynamicRun, cells: list[Cell]) -> list[Cell]:
    """``cells`` without the dynamic placeholders whose derived cells are all stored (each is
    replayed: a capacity is computed and stored again from its stored probes)."""
    out = []
    for cell in cells:
        if not getattr(cell.load_point, "dynamic", False):
            out.append(cell)
            continue
        try:
            run_dynamic(run, cell)
        except NotStored:
            out.append(cell)
            continue
        run.steps.logger.info("%s %s rep %d: every derived cell already stored; nothing to measure",
                              cell.backend, cell.load_point.label, cell.repetition)
    return out


def stand_ins(run: DynamicRun, cells: list[Cell]) -> list[Cell]:
    """``cells`` with each dynamic placeholder replaced by the first cell it derives that is not
    stored yet (none when all are), for storing a failure that happened before it ran (backend
    never ready, unhealthy GPU, giving up): that id is measured, and its row replaced, when the
    campaign runs again. ``run.measure`` must be None."""
    out: list[Cell] = []
    for cell in cells:
        if not getattr(cell.load_point, "dynamic", False):
            out.append(cell)
            continue
        try:
            run_dynamic(run, cell)
        except NotStored as e:
            out.append(e.cell)
    return out


# ---- sweep ---------------------------------------------------------------------------------------

def sweep_rates(sync_rate: float, saturating_rate: float, points: int, up_to: float = 1.0) -> list[float]:
    """``points`` rates evenly spread above ``sync_rate`` up to ``up_to`` x ``saturating_rate``."""
    low, high = sync_rate, max(saturating_rate * up_to, sync_rate)
    return [float(f"{low + (high - low) * k / points:.6g}") for k in range(1, points + 1)]


def _sweep(run: DynamicRun, placeholder: Cell) -> None:
    s, label = placeholder.load_point.sweep, placeholder.load_point.label
    refs = {}
    for role, concurrency in (("sync", 1), ("saturating", s.saturating_concurrency)):
        lp = SweepConcurrency(concurrency=concurrency, derived_from=label, role=role)
        cell = run.cell(placeholder, lp, {"role": role})
        got = run.get(cell, _note({"sweep": label, "role": role}))
        refs[role] = (got["summary"].get("request_throughput") if got["status"] in DONE_STATUSES else None)
    if not refs["sync"] or not refs["saturating"]:
        which = " and ".join(k for k, v in refs.items() if not v)
        run.steps.logger.warning("%s %s rep %d: the %s run has no measured request rate; the sweep's points "
                                 "are not measured (run the campaign again to retry)", placeholder.backend, label,
                                 placeholder.repetition, which)
        return
    sync_rate, sat_rate = float(refs["sync"]), float(refs["saturating"])
    for k, rate in enumerate(sweep_rates(sync_rate, sat_rate, s.points, s.up_to), start=1):
        beyond = rate > sat_rate * (1 + 1e-6)
        lp = SweepRate(rate=rate, arrival=s.arrival, burstiness=s.burstiness, max_concurrency=s.max_concurrency,
                       derived_from=label, point=k, beyond_saturation=beyond)
        info = {"sweep": label, "role": "point", "point": k, "target_rate": rate, "sync_rate": sync_rate,
                "saturating_rate": sat_rate, "beyond_saturation": beyond}
        run.get(run.cell(placeholder, lp, {"role": "point", "point": k}), _note(info))


def _note(info: dict[str, Any], key: str = "sweep") -> Callable[[CellOutcome], None]:
    def amend(outcome: CellOutcome) -> None:
        if outcome.summary is not None:
            outcome.summary[key] = dict(info)
    return amend


# ---- slo_capacity --------------------------------------------------------------------------------

def _slo_capacity(run: DynamicRun, placeholder: Cell) -> None:
    from benchflow.stats.capacity import search_capacity

    lp = placeholder.load_point
    s, label = lp.slo_capacity, lp.label
    slo = {m: dict(stats) for m, stats in (s.slo or run.spec.slo).items()}
    started = time.monotonic()

    def probe(rate: float, repetition: int) -> Any:
        rate = float(f"{rate:.6g}")
        probe_lp = ProbeRate(rate=rate, arrival=s.arrival, max_concurrency=s.max_concurrency, derived_from=label)
        cell = run.cell(placeholder, probe_lp, {"role": "probe", "rate": f"{rate:.6g}"}, repetition)
        got = run.get(cell, _probe_attainment(slo, label, rate, s.slo is None))
        return _probe_outcome(cell.id, got)

    def should_stop() -> bool:
        if run.measure is None:
            return False  # a replay never stops early: it stops at the first probe not stored
        return bool(run.steps.cancel_requested()) or (
            s.max_search_s is not None and time.monotonic() - started > s.max_search_s)

    result = search_capacity(probe, attainment=s.attainment, min_rate=s.min_rate, max_rate=s.max_rate,
                             precision=s.precision, repetitions=run.spec.repetitions, max_probes=s.max_probes,
                             should_stop=should_stop, seed=run.spec.workload.seed)
    reason = run.steps.cancel_requested() if run.measure is not None else None
    if reason:
        raise CampaignCancelled(reason)
    data = result.to_dict()
    data.update(backend=run.backend.name, load_label=label, slo=slo, target_attainment=s.attainment)
    run.steps.persist_artifact(f"capacity-{run.backend.name}-{label}.json",
                               json.dumps(data, indent=1, sort_keys=True, default=str).encode())
    run.result.capacities.append(capacity_row(run.backend.name, label, data, run.spec.repetitions))
    run.steps.logger.info("backend %s %s: SLO capacity %s req/s (%s, interval %s-%s) after %d probes",
                          run.backend.name, label, _g(data.get("capacity_rps")), data.get("status"),
                          _g(data.get("ci_low")), _g(data.get("ci_high")), len(data.get("probes") or []))


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _probe_attainment(slo: dict[str, dict[str, float]], label: str, rate: float,
                      campaign_slo: bool) -> Callable[[CellOutcome], None]:
    def amend(outcome: CellOutcome) -> None:
        if outcome.summary is None:
            return
        if outcome.run is not None:
            from benchflow.stats.capacity import attainment_of

            attainment = attainment_of(outcome.run.records, slo)
        else:  # no records to judge: the summary's own attainment, when it is of the same SLO
            attainment = outcome.summary.get("slo_attainment") if campaign_slo else None
        outcome.summary["slo_capacity_probe"] = {"search": label, "target_rate": rate, "attainment": attainment}
    return amend


def _probe_outcome(cell_id: str, got: dict[str, Any]) -> ProbeOutcome:
    from benchflow.stats.capacity import ProbeOutcome

    summary = got["summary"]
    saturated = got["status"] == "saturated" or summary.get("stop_reason") == "saturated"
    measured = got["status"] in DONE_STATUSES and not summary.get("invalid")
    attainment = (summary.get("slo_capacity_probe") or {}).get("attainment") if measured else None
    n = int(summary.get("completed") or 0) + int(summary.get("failed") or 0)
    return ProbeOutcome(attainment=attainment, n_requests=n, cell_id=cell_id, saturated=saturated)


def capacity_row(backend: str, label: str, data: dict[str, Any], repetitions: int) -> dict[str, Any]:
    """The aggregate row of an SLO capacity (the report and the database read it like any other)."""
    values = [r.get("capacity_rps") for r in data.get("repetitions") or []]
    return {"backend_name": backend, "load_label": label, "metric": CAPACITY_METRIC, "n": repetitions,
            "mean": data.get("capacity_rps"), "ci_low": data.get("ci_low"), "ci_high": data.get("ci_high"),
            "ci_method": "capacity", "values": values, "status": data.get("status"), "method": data.get("method"),
            "bracket": data.get("bracket"), "message": data.get("message"), "probes": data.get("probes") or [],
            "target_attainment": data.get("target_attainment"), "slo": data.get("slo")}


# ---- analysis ------------------------------------------------------------------------------------

def role_of(cell_row: dict[str, Any]) -> str | None:
    """``sync``, ``saturating``, ``point`` or ``probe`` for a derived cell's stored row, else None."""
    lp = cell_row.get("load_point") or {}
    return lp.get("role") if isinstance(lp, dict) and lp.get("derived_from") else None


def for_aggregates(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells aggregated across repetitions: all but probes (their rates differ per search)."""
    return [c for c in cells if role_of(c) != "probe"]


def for_comparisons(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells compared across backends: those at the same load for every backend (a sweep's points
    are at each backend's own rates, a search's probes at its own)."""
    return [c for c in cells if role_of(c) not in ("point", "probe")]


def aggregate_metrics(spec: CampaignSpec, metrics: list[str]) -> list[str]:
    """``metrics``, plus what a sweep's curve shows (request rate, output throughput, TTFT p50 and p99)."""
    if not any(getattr(p, "mode", None) == "sweep" for p in spec.workload.load_points):
        return list(metrics)
    curve = ["request_throughput", "output_throughput", "ttft_ms.p50", "ttft_ms.p99"]
    return list(metrics) + [m for m in curve if m not in metrics]
