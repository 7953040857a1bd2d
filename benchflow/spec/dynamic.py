"""Load points expanded at run time: a latency-throughput ``sweep`` and an ``slo_capacity`` search.

Their cells depend on what was measured before them (the sweep's rates on its synchronous and
saturating cells, the search's next rate on the last probes), so :meth:`CampaignSpec.cells` yields
one *placeholder* cell for each and the engine (:mod:`benchflow.engine.dynamic`) measures the
derived cells in the backend's lifecycle, through the same steps as every other cell.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from benchflow.spec import limits as L
from benchflow.spec.types import Seconds, SloSeconds, StrictModel

__all__ = ["SweepLoad", "SweepSettings", "SloCapacityLoad", "SloCapacitySettings", "SloMap", "MAX_SWEEP_POINTS",
           "MAX_PROBES", "DEFAULT_PROBES"]

#: More points than any curve needs; each one is a measured cell per repetition.
MAX_SWEEP_POINTS = 100
#: Probes of one search (all repetitions together); each one is a measured cell.
MAX_PROBES = 1_000
#: Probes a search without ``max_probes`` is counted with when the spec's size is checked.
DEFAULT_PROBES = 20

SloMap = dict[Literal["ttft", "tpot", "itl", "e2e"], dict[Literal["mean", "p50", "p90", "p95", "p99"], SloSeconds]]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,23}$")]
Arrival = Literal["poisson", "gamma", "constant"]


class SweepSettings(StrictModel):
    """A synchronous run (concurrency 1), a saturating run, then ``points`` open-loop rates spread
    evenly between the two measured request rates (up to ``up_to`` times the saturating one)."""

    points: int = Field(..., ge=1, le=MAX_SWEEP_POINTS, description="open-loop rates between the two runs")
    arrival: Arrival = Field("poisson", description="inter-arrival distribution of the open-loop points")
    burstiness: L.Burstiness = Field(1.0, gt=0, description="gamma shape; 1.0 equals poisson, <1 burstier")
    saturating_concurrency: L.Concurrency = Field(
        128, ge=2, description="closed-loop concurrency of the throughput-saturating run")
    max_concurrency: L.Concurrency | None = Field(
        None, gt=0, description="optional cap on requests in flight at the open-loop points")
    up_to: float = Field(1.0, ge=1.0, le=4.0, description="the highest point's rate, as a multiple of the "
                                                        "saturating run's measured request rate")
    name: Name | None = Field(None, description="label of this sweep (default sweep<points>)")

    @model_validator(mode="after")
    def _burstiness_needs_gamma(self) -> SweepSettings:
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ValueError(f"burstiness only applies to arrival gamma (this sweep is {self.arrival})")
        return self


class SloCapacitySettings(StrictModel):
    """The highest open-loop rate at which at least ``attainment`` of the requests meet every SLO:
    bracket from ``min_rate``, then bisect to ``precision``; the spec's repetitions give its CI."""

    slo: SloMap | None = Field(None, description="the SLO; default: the campaign's slo section; units required")
    attainment: float = Field(0.99, gt=0, le=1, description="share of requests that must meet every SLO")
    min_rate: L.Rate = Field(..., gt=0, description="lowest rate tried (requests/s)")
    max_rate: L.Rate = Field(..., gt=0, description="highest rate tried (requests/s)")
    precision: float = Field(0.05, gt=0, lt=1, description="relative width at which bisection stops (0.05 = 5%)")
    max_probes: int | None = Field(None, ge=1, le=MAX_PROBES, description="probe cells, all repetitions together")
    max_search_s: Seconds | None = Field(None, gt=0, description="time limit of the search (e.g. '30m')")
    arrival: Arrival = Field("poisson", description="inter-arrival distribution of the probes")
    max_concurrency: L.Concurrency | None = Field(None, gt=0, description="optional cap on requests in flight")
    name: Name | None = Field(None, description="label of this search (default slocap)")

    @model_validator(mode="after")
    def _rates_in_order(self) -> SloCapacitySettings:
        if self.max_rate <= self.min_rate:
            raise ValueError(f"max_rate ({self.max_rate:g}) must be above min_rate ({self.min_rate:g})")
        if self.slo is not None and not self.slo:
            raise ValueError("slo is empty: give at least one objective, or leave it out to use the campaign's")
        return self


class SweepLoad(StrictModel):
    """``{sweep: {points: N, ...}}``: a latency-throughput curve measured at run time."""

    sweep: SweepSettings = Field(..., description="the sweep's settings")

    @property
    def mode(self) -> str:
        return "sweep"

    @property
    def dynamic(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return self.sweep.name or f"sweep{self.sweep.points}"

    def planned_cells(self, repetitions: int) -> int:
        return (self.sweep.points + 2) * repetitions


class SloCapacityLoad(StrictModel):
    """``{slo_capacity: {min_rate, max_rate, ...}}``: the SLO capacity, searched at run time."""

    slo_capacity: SloCapacitySettings = Field(..., description="the search's settings")

    @property
    def mode(self) -> str:
        return "slo_capacity"

    @property
    def dynamic(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return self.slo_capacity.name or "slocap"

    def planned_cells(self, repetitions: int) -> int:
        return self.slo_capacity.max_probes or DEFAULT_PROBES * repetitions
