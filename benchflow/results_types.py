"""Typed result records: what a campaign measures and derives, from the per-cell summary to the
comparisons, each with a ``schema_version``.

Pydantic v2 models (not dataclasses): the store already validates its rows with pydantic, these
records cross JSON (the spool, Prefect results, the database's JSON columns) where pydantic gives
validation and ``model_dump(mode="json")`` for free, and Prefect serializes them as task results.

Dict compatibility: every record also answers ``row["metric"]``, ``row.get("ci_low")`` and
``dict(row)`` (``keys()``), so callers that still handle rows as dicts (the report) keep working
while they move to attributes.

- :class:`CellSummary`: one cell's summary (``benchflow.stats.summarize``); unknown keys are kept.
- :class:`CellRow`: one cell's bookkeeping row (``cells`` table).
- :class:`AggregateRow`: one (backend, load point, metric) across repetitions (``aggregates``).
- :class:`ComparisonRow`: a candidate against a baseline at one load point and metric (``comparisons``).
- :class:`CellResult`: one stored cell joined with its summary, as the analysis reads it.

This module imports only pydantic, :mod:`benchflow` and :mod:`benchflow.stats.keys`: the store,
the analysis, the engine, tasks and flows all import it, and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from benchflow import SCHEMA_VERSION
from benchflow.stats.keys import MetricKey

CellStatus = Literal["completed", "failed", "skipped", "stalled", "cancelled", "saturated"]


class _Record(BaseModel):
    """Attribute access first; the dict-style reads are for callers not yet moved."""

    @model_validator(mode="before")
    @classmethod
    def _fill_version(cls, data: Any) -> Any:
        return _with_version(data)

    def __getitem__(self, name: str) -> Any:
        data = self._as_mapping()
        if name not in data:
            raise KeyError(name)
        return data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._as_mapping().get(name, default)

    def keys(self) -> Any:
        return self._as_mapping().keys()

    def __contains__(self, name: object) -> bool:
        return name in self._as_mapping()

    def _as_mapping(self) -> dict[str, Any]:
        return {**self.__dict__, **(self.model_extra or {})}


def _with_version(data: Any) -> Any:
    """A record without a schema_version is one written by this version (the field is then "set",
    so ``model_dump(exclude_unset=True)`` keeps it)."""
    if isinstance(data, Mapping) and "schema_version" not in data:
        return {**data, "schema_version": SCHEMA_VERSION}
    return data


class Distribution(BaseModel):
    """One latency block of a summary, in milliseconds (``None`` when undefined)."""

    model_config = ConfigDict(extra="allow")

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None


class CellSummary(_Record):
    """One cell's summary (METRICS.md). The keys this code reads are typed; every other key of
    ``stats.summarize`` (windows, energy, ...) is kept as it is. Dump with :meth:`to_dict`, which
    gives back exactly the keys that were given (plus ``schema_version``)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    ttft_ms: Distribution | None = None
    tpot_ms: Distribution | None = None
    itl_ms: Distribution | None = None
    e2e_ms: Distribution | None = None
    ntpot_ms: Distribution | None = None
    client_lag_ms: Distribution | None = None
    request_throughput: float | None = None
    output_throughput: float | None = None
    total_throughput: float | None = None
    goodput: float | None = None
    slo_attainment: float | None = None
    error_rate: float | None = None
    completed: int | None = None
    failed: int | None = None
    incomplete: int | None = None
    errors: dict[str, Any] | None = None
    invalid: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as the plain dict it came from (what ``summary.json`` and the database hold)."""
        return self.model_dump(exclude_unset=True)

    def value(self, key: str | MetricKey) -> float | None:
        """The value of one metric ("ttft_ms.p99"), as :meth:`MetricKey.value` reads it."""
        return MetricKey.parse(key).value(self.to_dict())


class CellRow(_Record):
    """One cell's row in the ``cells`` table (``schema_version`` is carried, not stored: the
    table has no such column)."""

    model_config = ConfigDict(extra="forbid")

    cell_id: str = Field(..., min_length=1, max_length=128)
    backend_name: str = Field(..., min_length=1, max_length=128)
    load_label: str = Field(..., min_length=1, max_length=64)
    load_point: dict[str, Any] = Field(default_factory=dict)
    repetition: int = Field(..., ge=0)
    position: int = Field(..., ge=0, description="index in the campaign's execution order")
    status: CellStatus
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    window_s: float | None = Field(None, ge=0, description="measurement window")
    host: str | None = Field(None, max_length=255)
    gpu_uuids: list[str] = Field(default_factory=list)
    error: str | None = None
    invalid_reason: str | None = None
    artifact_uris: dict[str, str] = Field(default_factory=dict)
    attempt: int = Field(1, ge=1)
    schema_version: int = SCHEMA_VERSION

    def db_columns(self) -> dict[str, Any]:
        """The ``cells`` columns (without ``campaign_id``)."""
        return self.model_dump(exclude={"schema_version"})


class _Derived(_Record):
    """A row the analysis derives; keys beyond the declared ones go to the ``detail`` JSON column,
    and so does ``schema_version`` (the tables have no column for it)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION

    @property
    def metric_key(self) -> MetricKey:
        return MetricKey.parse(self.metric)  # type: ignore[attr-defined]

    def db_columns(self) -> dict[str, Any]:
        """The table's columns (without ``campaign_id``): declared fields, the rest in ``detail``."""
        extra = dict(self.model_extra or {})
        data = self.model_dump(exclude={"schema_version", *extra})
        data["detail"] = {**extra, "schema_version": self.schema_version}
        return data

    @classmethod
    def from_stored(cls, row: Mapping[str, Any]) -> Any:
        """A record from a row read back from the store (``detail`` merged back; a row stored
        before records carried a version reads as version 1)."""
        detail = dict(row.get("detail") or {})
        data = {k: v for k, v in row.items() if k not in ("detail", "campaign_id")}
        return cls.model_validate({**data, **detail, "schema_version": detail.get("schema_version", 1)})


class AggregateRow(_Derived):
    """``stats.Aggregate`` of one (backend, load point, metric) across repetitions."""

    backend_name: str = Field(..., min_length=1, max_length=128)
    load_label: str = Field(..., min_length=1, max_length=64)
    metric: str = Field(..., min_length=1, max_length=64, description='summary key, e.g. "ttft_ms.p99"')
    n: int = Field(..., ge=0)
    mean: float | None = None
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    t_low: float | None = None
    t_high: float | None = None
    values: list[float | None] = Field(default_factory=list)


class ComparisonRow(_Derived):
    """``stats.Comparison`` of a candidate against a baseline (backends, or a regression check)."""

    kind: Literal["backends", "regression"]
    baseline_ref: str = Field(..., min_length=1, max_length=256)
    candidate_ref: str = Field(..., min_length=1, max_length=256)
    load_label: str = Field(..., min_length=1, max_length=64)
    metric: str = Field(..., min_length=1, max_length=64)
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str = Field(..., max_length=32)
    #: no default: a backends comparison takes the spec's ``compare.tolerance``, a regression row
    #: its ``regression`` tolerance (one definition each, in :mod:`benchflow.spec`).
    tolerance: float = Field(..., ge=0)
    baseline_campaign_id: str | None = None
    method: str | None = Field(None, max_length=32, description="how the CI and verdict were computed")
    reason: str | None = Field(None, description="why 'not enough repetitions' / 'insufficient data'")


class CellResult(_Record):
    """One cell as the analysis reads it: its stored row (:class:`CellRow`) joined with its
    summary (:class:`CellSummary`; empty for a cell that stored none). Built by
    :func:`benchflow.campaign.analysis_input`; a plain dict with these keys (and any others,
    ignored) is accepted wherever one is expected."""

    model_config = ConfigDict(extra="ignore")

    cell_id: str = ""
    backend_name: str
    load_label: str
    repetition: int | None = None
    status: str
    error: str | None = None
    summary: CellSummary = Field(default_factory=CellSummary)
    schema_version: int = SCHEMA_VERSION

    @model_validator(mode="before")
    @classmethod
    def _no_summary(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("summary") is None:
            return {**data, "summary": {}}
        return data

    @property
    def valid(self) -> bool:
        """Completed and not marked invalid: the cells that count in aggregates and comparisons."""
        return self.status == "completed" and not self.summary.invalid


def cell_results(rows: Iterable[CellResult | Mapping[str, Any]]) -> list[CellResult]:
    """``rows`` as :class:`CellResult` (records pass through; dicts are validated once)."""
    return [r if isinstance(r, CellResult) else CellResult.model_validate(dict(r)) for r in rows]


def iter_dicts(rows: Any) -> Iterator[dict[str, Any]]:
    """Records or dicts, as plain dicts (for callers that still take dicts)."""
    for row in rows:
        yield row.model_dump() if isinstance(row, BaseModel) else dict(row)
