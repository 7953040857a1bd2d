"""Campaign spec models (strict pydantic v2) and the expansion of a campaign into cells.

``CampaignSpec.cells()`` expands the matrix backend x load point x repetition in the spec's
order. Cell ids are content hashes. Counts have upper bounds (:mod:`benchflow.spec.limits`), each
with its reason. Reading files and reporting problems is :mod:`benchflow.spec.loader`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator, BeforeValidator, Discriminator, Field, ValidationInfo, field_validator, model_validator, Tag,
)

from benchflow.spec import limits as L
from benchflow.spec.backends import Backend, BackendSpec
from benchflow.spec.checks import cross_field_problems
from benchflow.spec.driver import DriverSpec, driver_compare_defaults, driver_load_problems
from benchflow.spec.dynamic import SloCapacityLoad, SloMap, SweepLoad
from benchflow.spec.trace import TraceLoadPoint
from benchflow.spec.types import Seconds, StrictModel, no_nul, sha256_hex
from benchflow.agentic import AgenticSpec
from benchflow.metric_key import SUMMARY_DISTRIBUTIONS, SUMMARY_SCALARS, SUMMARY_STATS, check_summary_metric
from benchflow.workload import parse_notation

__all__ = [
    "CampaignSpec", "ModelSpec", "WorkloadSpec", "JsonlSource", "LimitsSpec", "SaturationSpec", "CompareSpec",
    "HealthPolicy", "RegressionSpec", "ConcurrencyLoad", "RateLoad", "SweepLoad", "SloCapacityLoad", "TraceLoadPoint",
    "LoadPoint",
    "Cell",
    "SUMMARY_DISTRIBUTIONS", "SUMMARY_STATS", "SUMMARY_SCALARS", "SLO_METRICS", "SLO_STATS", "SummaryMetric",
]

SLO_METRICS = ("ttft", "tpot", "itl", "e2e")
SLO_STATS = ("mean", "p50", "p90", "p95", "p99")
_DEFAULT_COMPARE = ("ttft_ms.p50", "ttft_ms.p99", "tpot_ms.p50", "tpot_ms.p99", "output_throughput")


class ConcurrencyLoad(StrictModel):
    """Closed loop: ``concurrency`` workers, each sends its next request when the previous ends."""

    concurrency: L.Concurrency = Field(..., gt=0, description="number of concurrent closed-loop workers")

    @property
    def mode(self) -> str:
        return "closed"

    @property
    def dynamic(self) -> bool:
        return False

    @property
    def label(self) -> str:
        return f"c{self.concurrency}"


class RateLoad(StrictModel):
    """Open loop: requests sent on a pre-computed schedule of ``rate`` requests per second."""

    rate: L.Rate = Field(..., gt=0, description="target request rate (requests/s)")
    arrival: Literal["poisson", "gamma", "constant"] = Field(..., description="inter-arrival distribution")
    burstiness: L.Burstiness = Field(1.0, gt=0, description="gamma shape; 1.0 equals poisson, <1 burstier")
    max_concurrency: L.Concurrency | None = Field(None, gt=0, description="optional cap on requests in flight")

    @property
    def mode(self) -> str:
        return "open"

    @property
    def dynamic(self) -> bool:
        return False

    @property
    def label(self) -> str:
        rate = f"{self.rate:g}"
        return f"r{rate}-{self.arrival}" + (f"-cap{self.max_concurrency}" if self.max_concurrency else "")

    @model_validator(mode="after")
    def _burstiness_needs_gamma(self) -> RateLoad:
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ValueError(f"burstiness only applies to arrival gamma (this rate is {self.arrival})")
        return self


_LOAD_POINT_TAGS = ("concurrency", "rate", "sweep", "slo_capacity", "trace")
_LOAD_POINT_CLASSES: dict[str, type] = {}


def _load_point_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((tag for tag in _LOAD_POINT_TAGS if tag in value), None)
    return next((tag for tag, cls in _LOAD_POINT_CLASSES.items() if isinstance(value, cls)), None)


LoadPoint = Annotated[
    Union[Annotated[ConcurrencyLoad, Tag("concurrency")], Annotated[RateLoad, Tag("rate")],
          Annotated[SweepLoad, Tag("sweep")], Annotated[SloCapacityLoad, Tag("slo_capacity")],
          Annotated[TraceLoadPoint, Tag("trace")]],
    Discriminator(
        _load_point_tag,
        custom_error_type="load_point",
        custom_error_message="a load point is {concurrency: N}, {rate: R, arrival: poisson|gamma|constant}, "
                             "{trace: {path: FILE}}, {sweep: {points: N}} or {slo_capacity: {min_rate: R, max_rate: R}}",
    ),
]
_LOAD_POINT_CLASSES.update(concurrency=ConcurrencyLoad, rate=RateLoad, sweep=SweepLoad, slo_capacity=SloCapacityLoad,
                           trace=TraceLoadPoint)
AnyLoad = Union[ConcurrencyLoad, RateLoad, SweepLoad, SloCapacityLoad, TraceLoadPoint]


class JsonlSource(StrictModel):
    """Prompts from a JSONL file; a relative path is resolved against the spec file's folder."""

    jsonl: Path = Field(..., description="JSONL file: {prompt|messages, max_tokens?} per line")
    max_tokens: L.Tokens = Field(256, gt=0, description="output length for lines without max_tokens")
    format: Literal["prompts", "sharegpt", "mooncake"] = Field(
        "prompts", description="prompts: {prompt|messages, max_tokens?}; sharegpt: {conversations: [...]}; "
                               "mooncake: {timestamp, input_length, output_length, hash_ids} (benchflow.traces)")
    block_size: L.Tokens = Field(512, gt=0, description="mooncake: tokens per hash_ids block")

    @field_validator("jsonl")
    @classmethod
    def _resolve(cls, path: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        no_nul(str(path))
        path = path.expanduser()
        return path if path.is_absolute() else (Path(base) if base else Path.cwd()) / path


def _dataset_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "notation"
    return "file" if isinstance(value, (dict, JsonlSource)) else None


def _check_notation(text: str) -> str:
    parse_notation(text)
    return text.strip()


DatasetField = Annotated[
    Union[
        Annotated[Annotated[str, AfterValidator(_check_notation)], Tag("notation")],
        Annotated[JsonlSource, Tag("file")],
    ],
    Discriminator(
        _dataset_tag,
        custom_error_type="dataset",
        custom_error_message="a dataset is a distribution such as 'D(128,128)' or {jsonl: path}",
    ),
]


class WorkloadSpec(StrictModel):
    """How prompts are made and how they arrive."""

    dataset: DatasetField = Field(
        ..., description="'D(128,128)', 'N(480,240)/(300,150)', 'U(50,150)/(20,80)', shared prefixes "
                         "'P(groups,prefix)/(suffix,output)', or {jsonl: path}"
    )
    seed: L.Seed = Field(0, ge=0, description="seed of prompts, schedules and the shuffled order")
    load_points: list[LoadPoint] = Field(
        ..., min_length=1, max_length=L.MAX_LOAD_POINTS, description="concurrencies and/or rates"
    )
    max_requests: L.Requests | None = Field(None, gt=0, description="measured requests per cell")
    max_duration_s: Seconds | None = Field(None, gt=0, description="time limit per cell")
    warmup_requests: L.Requests = Field(0, ge=0, description="requests sent first and left out of the statistics")
    request_timeout_s: Seconds = Field(60.0, gt=0, description="per-request timeout")
    temperature: L.Temperature = Field(0.0, ge=0, description="sampling temperature")
    ignore_eos: bool = Field(True, description="ask the server to generate exactly max_tokens")
    api: Literal["completions", "chat"] = Field("completions", description="/v1/completions or /v1/chat/completions")
    clients: int = Field(1, ge=1, le=64, description="load-generator processes one cell's load is split over "
                                                     "(one core each); raise it when a cell is client_bound")
    agentic: AgenticSpec | None = Field(None, description="built-in agentic workload: each concurrency load "
                                                          "point runs that many multi-turn agents")
    driver: DriverSpec | None = Field(None, description="an external driver program makes the load instead of "
                                                        "benchflow's load generator (benchflow.driver)")

    @model_validator(mode="after")
    def _agentic_load(self) -> WorkloadSpec:
        if self.agentic is not None:
            bad = [p.label for p in self.load_points if not isinstance(p, ConcurrencyLoad)]
            if bad or self.warmup_requests or self.clients != 1:
                raise ValueError("agentic workloads take only {concurrency: N} load points (the number of agents), "
                                 f"no warmup_requests and clients 1 (got load points {bad or 'ok'}, "
                                 f"warmup_requests {self.warmup_requests}, clients {self.clients})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _driver_needs_no_dataset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("driver") is not None and "dataset" not in data:
            return {**data, "dataset": "D(1,1)"}  # unused: the driver makes its own prompts
        return data

    @model_validator(mode="after")
    def _driver_checks(self) -> WorkloadSpec:
        if self.driver is None:
            return self
        problems = driver_load_problems(self.load_points)
        if self.max_duration_s is None:
            problems.append("max_duration_s: a driver workload needs one (the longest a driver may run per cell)")
        if problems:
            raise ValueError("; ".join(problems))
        if self.agentic is not None:
            raise ValueError("a workload has either a driver or agentic, not both")
        return self

    @field_validator("load_points")
    @classmethod
    def _unique_load_points(cls, points: list[AnyLoad]) -> list[AnyLoad]:
        seen: dict[Any, int] = {}
        labels: dict[str, int] = {}
        for i, p in enumerate(points):
            key = (type(p).__name__, repr(p.model_dump()))
            if key in seen:
                raise ValueError(f"load_points[{i}] ({p.label}) repeats load_points[{seen[key]}]")
            seen[key] = i
            # the label keys the cells, aggregates and comparisons: two different load points with one
            # label (two traces with one name, two gamma rates differing only in burstiness) would mix
            if p.label in labels:
                named = [q for q in (p, points[labels[p.label]]) if q.dynamic or q.mode == "trace"]
                hint = "give it another name (e.g. name: sweep_b)" if named else "they would share cells and aggregates"
                raise ValueError(f"load_points[{i}] has the label {p.label!r} of load_points[{labels[p.label]}]; "
                                 f"{hint}")
            labels[p.label] = i
        return points

    def measurement_fields(self) -> dict[str, Any]:
        """The fields that change what one cell measures (everything but the load point list)."""
        data = self.model_dump(mode="json", exclude={"load_points", "dataset"}, exclude_defaults=True)
        if isinstance(self.dataset, str):
            data["dataset"] = str(parse_notation(self.dataset))
        else:
            data["dataset"] = {"jsonl_sha256": _file_sha256(self.dataset.jsonl), "max_tokens": self.dataset.max_tokens}
            if self.dataset.format != "prompts":
                data["dataset"].update(format=self.dataset.format, block_size=self.dataset.block_size)
        traces = sorted({str(p.trace.path) for p in self.load_points if isinstance(p, TraceLoadPoint)})
        if traces:  # a trace's content is what its cells send (a changed file: new cells)
            data["trace_sha256"] = {path: _file_sha256(Path(path)) for path in traces}
        return data


def _file_sha256(path: Path) -> str:
    import hashlib

    try:
        if not path.is_file():  # never read a FIFO or /dev/zero
            return f"unreadable:{path}"
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except (OSError, ValueError):
        return f"unreadable:{path}"


class ModelSpec(StrictModel):
    name: str = Field(..., min_length=1, description="served model name (the 'model' field of requests)")
    tokenizer: str | None = Field(None, description="tokenizer id, when it differs from the model")


class SaturationSpec(StrictModel):
    """Early stop of an open-loop cell whose server no longer keeps up (:mod:`benchflow.saturation`)."""

    enabled: bool = Field(True, description="stop an open-loop cell as 'saturated' when the server no longer keeps up")
    min_seconds: Seconds = Field(10.0, gt=0, description="no verdict before this much of the measured phase")
    min_requests: int = Field(20, ge=3, le=L.MAX_REQUESTS, description="no verdict before this many first tokens")
    ttft_rise: float = Field(1.0, gt=0, le=1000, description="TTFT of the latest tenth of requests must be "
                             "(1 + this) times that of the first tenth, with a rising slope")
    min_ttft_slope: float = Field(0.1, gt=0, le=1000, description="... and the slope of TTFT against send time "
                                  "(seconds per second: the overload λ/μ − 1) at least this")
    in_flight_growth: float = Field(2.0, gt=1, le=1000, description="requests outstanding over the last third "
                                    "of the run must be this many times those over the first third")
    min_in_flight_growth: float = Field(4.0, ge=0, le=L.MAX_CONCURRENCY,
                                        description="... and at least this many requests more")
    confidence: float = Field(0.99, gt=0.5, lt=1, description="two-sided level of the slopes' intervals")
    confirm_s: Seconds = Field(3.0, ge=0, description="both signs must hold this long before the cell stops")


class LimitsSpec(StrictModel):
    """When a cell is marked invalid (METRICS.md, "Validity")."""

    max_error_rate: float = Field(0.05, ge=0, le=1, description="error rate above which a cell is invalid")
    client_lag_p99_s: Seconds = Field(0.05, gt=0, description="open loop: p99 client lag limit")
    min_rate_fraction: float = Field(0.95, gt=0, le=1, description="open loop: achieved/target rate floor")
    stall_after_s: Seconds | None = Field(
        30.0, gt=0, description="stop a cell as 'stalled' (a dead backend) when requests are in flight and none "
                                "has had an output token for this long; null turns the check off")
    saturation: SaturationSpec = Field(default_factory=SaturationSpec,
                                       description="open loop: early stop when the server no longer keeps up")


#: A summary metric a spec may name ("ttft_ms.p99", "output_throughput"), checked by MetricKey.
SummaryMetric = Annotated[str, AfterValidator(check_summary_metric)]


class CompareSpec(StrictModel):
    """Which backend is the baseline and which summary metrics are compared with it."""

    baseline: str | None = Field(None, description="baseline backend name (default: the first backend)")
    tolerance: float = Field(0.0, ge=0, lt=1, description="ratio band around 1 treated as no difference")
    metrics: list[SummaryMetric] = Field(
        default_factory=lambda: list(_DEFAULT_COMPARE), description='summary keys, e.g. "ttft_ms.p99"'
    )


class RegressionSpec(StrictModel):
    """Nightly regression check: this run against a baseline run of the same spec name."""

    baseline: Literal["auto", "pinned", "previous"] = Field(
        "auto", description="auto: the pinned baseline, else the last completed nightly; pinned; previous"
    )
    tolerance: float = Field(0.05, ge=0, lt=1, description="relative change treated as noise (0.05 = 5%)")
    tolerances: dict[SummaryMetric, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict, description='per-metric tolerances, e.g. {"ttft_ms.p99": 0.1}'
    )
    metrics: list[SummaryMetric] | None = Field(
        None, min_length=1, description="summary keys checked (default: compare.metrics)"
    )


class HealthPolicy(StrictModel):
    on_unhealthy: Literal["fail", "skip"] = Field("fail", description="what to do with a backend on a bad GPU")
    min_free_memory_gib: L.Gibibytes = Field(1.0, ge=0, description="free GPU memory required before deploying")
    allow_foreign_processes: bool = Field(False, description="tolerate other processes on the GPU")


def default_baseline(data: Any) -> Any:
    """A copy of the raw ``data`` whose ``compare.baseline`` defaults to the first backend's name."""
    if not isinstance(data, dict):
        return data
    backends = data.get("backends")
    compare = data.get("compare", {})
    if not (isinstance(backends, list) and backends and isinstance(compare, dict)):
        return data
    first = backends[0]
    name = first.get("name") if isinstance(first, dict) else getattr(first, "name", None)
    if compare.get("baseline") is not None or not isinstance(name, str):
        return data
    return {**data, "compare": {**compare, "baseline": name}}


def _model_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


#: Campaign fields that say where it runs, not what it measures (left out of its content hash).
EXECUTION_FIELDS = ("placement", "parallel")


class CampaignSpec(StrictModel):
    """A campaign: backends x load points x repetitions, plus SLOs, limits and comparisons."""

    name: str = Field(..., min_length=1, description="campaign name")
    description: str = Field("", description="free text")
    labels: dict[str, str] = Field(default_factory=dict, description="free key/value labels")
    model: Annotated[ModelSpec, BeforeValidator(_model_shorthand)] = Field(..., description="the served model")
    backends: list[Backend] = Field(
        ..., min_length=1, max_length=L.MAX_BACKENDS, description="serving configurations, deployed one at a time"
    )
    workload: WorkloadSpec = Field(..., description="prompts and arrivals")
    repetitions: L.Repetitions = Field(1, ge=1, description="measured runs of each (backend, load point)")
    order: Literal["interleaved", "grouped", "shuffled"] = Field("interleaved", description="cell order per backend")
    slo: SloMap = Field(default_factory=dict, description='e.g. {ttft: {p99: "500ms"}}; units required')
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description="validity limits")
    compare: CompareSpec = Field(default_factory=CompareSpec, description="backend comparison")
    health: HealthPolicy = Field(default_factory=HealthPolicy, description="GPU health gate")
    allow_simulated: bool = Field(False, description="accept kind sim backends")
    regression: RegressionSpec | None = Field(None, description="nightly regression check against a baseline run")
    placement: Literal["local", "pool"] = Field(
        "local", description="local: every backend in this flow run, one after another; pool: each backend is a "
        "run of the campaign-backend deployment on the GPU work pool (the Prefect flow under a worker only)")
    parallel: int = Field(1, ge=1, le=L.MAX_BACKENDS, description="with placement pool: backends at once")

    @model_validator(mode="before")
    @classmethod
    def _default_baseline(cls, data: Any) -> Any:
        return default_baseline(driver_compare_defaults(data))

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> CampaignSpec:
        if (info.context or {}).get("defer_cross_checks"):
            return self  # the loader runs them itself, to report each problem on its own line
        problems = cross_field_problems(self, check_files=False)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def backend(self, name: str) -> BackendSpec:
        """The backend called ``name``; ``KeyError`` if there is none."""
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the validated spec: key order does not matter, and fields
        at their default values are left out (a field added to the models later keeps old hashes)."""
        # where the backends run (placement, parallel) is not what is measured: a campaign resumes under either
        return sha256_hex(self.model_dump(mode="json", exclude_defaults=True, exclude=set(EXECUTION_FIELDS)))

    def cells(self) -> list[Cell]:
        """Every cell, grouped by backend (spec order), in the spec's order within a backend."""
        plan = _order(len(self.workload.load_points), self.repetitions, self.order, self.workload.seed)
        common = self.cell_common()
        cells: list[Cell] = []
        for backend in self.backends:
            backend_hash = backend.content_hash()
            for lp_index, rep in plan:
                lp = self.workload.load_points[lp_index]
                if isinstance(lp, SloCapacityLoad) and rep:
                    continue  # one search covers every repetition (they give its interval)
                cells.append(derived_cell(common, backend.name, backend_hash, lp, rep, len(cells), self.workload.seed))
        return cells

    def cell_common(self) -> dict[str, Any]:
        """What every cell id of this campaign hashes besides its backend, load point and repetition."""
        return {"model": self.model.model_dump(mode="json", exclude_defaults=True),
                "workload": self.workload.measurement_fields()}


def derived_cell(common: dict[str, Any], backend: str, backend_hash: str, lp: Any, rep: int, index: int,
                 seed: int, extra: dict[str, Any] | None = None, measured: Any = None) -> Cell:
    """The cell of ``lp`` (a load point of the spec) with its content-hash id and seed; a cell a
    dynamic load point derives also gives ``extra`` (which one, e.g. ``{"role": "point", "point": 3}``,
    hashed with ``lp``) and ``measured``, the concurrency or rate it runs at."""
    lp_data = {"mode": lp.mode, **lp.model_dump(mode="json", exclude_defaults=True)}
    if extra:
        lp_data = {**lp_data, "derived": extra}
    cell_id = sha256_hex({**common, "backend": {"name": backend, "hash": backend_hash},
                          "load_point": lp_data, "repetition": rep})[:16]
    seed_hash = sha256_hex({"seed": seed, "load_point": lp_data, "repetition": rep})
    return Cell(id=cell_id, backend=backend, load_point=measured if measured is not None else lp, repetition=rep,
                index=index, seed=int(seed_hash[:15], 16))


def _order(n_points: int, repetitions: int, order: str, seed: int) -> list[tuple[int, int]]:
    """(load point index, repetition) pairs of one backend, in the campaign's order."""
    if order == "grouped":
        return [(p, r) for p in range(n_points) for r in range(repetitions)]
    plan = [(p, r) for r in range(repetitions) for p in range(n_points)]
    if order == "shuffled":
        perm = np.random.default_rng(seed).permutation(len(plan))
        plan = [plan[int(i)] for i in perm]
    return plan


class Cell(StrictModel):
    """One backend x one load point x one repetition: one measured run."""

    id: str = Field(..., description="stable content hash (hex)")
    backend: str = Field(..., description="backend name")
    load_point: LoadPoint = Field(..., description="the concurrency or rate")
    repetition: int = Field(..., ge=0, description="0-based repetition")
    index: int = Field(..., ge=0, description="position in the campaign's run order")
    seed: int = Field(..., ge=0, description="prompt/schedule seed; the same for every backend")

    @property
    def load_label(self) -> str:
        return self.load_point.label

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.load_point.label}/rep{self.repetition}"
