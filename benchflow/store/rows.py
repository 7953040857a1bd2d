"""Validated row inputs and the write operations built from them.

Every write is an :class:`Op` (a name plus JSON-ready arguments), so the same write can run now,
or be spooled to disk as JSON and replayed later with the same result. Content-derived ids (the
health report id) and times (``created_at``, ``updated_at``) are fixed when the op is built, not
when it runs, so a replay is idempotent, and a late replay of an old campaign write cannot undo a
newer one (campaign rows are last-writer-wins by ``updated_at``).
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic_core import to_jsonable_python

from benchflow.redact import redact_command, redact_mapping, redact_spec, redact_value
from benchflow import SCHEMA_VERSION
from benchflow.results_types import AggregateRow, CellRow, CellStatus, CellSummary, ComparisonRow
from benchflow.stats.keys import MetricKey
from benchflow.store.models import LATENCY_METRICS, LATENCY_STATS

#: The summary metrics stored as real ``cell_summaries`` columns (``key.column``: "ttft_ms_p99").
SUMMARY_COLUMN_KEYS: tuple[MetricKey, ...] = (
    *(MetricKey(metric, stat) for metric in LATENCY_METRICS for stat in LATENCY_STATS),
    MetricKey("client_lag_ms", "p99"),
)

CampaignStatus = Literal["running", "completed", "failed", "partial", "cancelled"]


class Op(NamedTuple):
    """One write: ``name`` selects a writer in :mod:`benchflow.store.writes`; ``args`` is JSON-ready."""

    name: str
    args: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Op:
        return cls(str(data["name"]), dict(data["args"]))


_DATETIME = TypeAdapter(datetime)


def _op(name: str, args: dict[str, Any]) -> Op:
    """An op whose every text value went through :func:`benchflow.redact.redact_value`: no row the
    store writes (spec, commands, cell errors, summaries, labels, manifests) holds a password, a
    secret flag value or a secret-looking env value in clear."""
    return Op(name, redact_value(args))


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_safe(value: Any) -> Any:
    """JSON-ready (datetimes as ISO strings, tuples as lists) with NaN/inf replaced by None."""
    value = to_jsonable_python(value, fallback=str)
    return _finite(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CampaignRow(_Row):
    id: str = Field(..., min_length=1, max_length=128, description="campaign id")
    name: str = Field(..., min_length=1, max_length=200)
    spec: dict[str, Any] = Field(..., description="the validated spec, JSON form")
    spec_hash: str = Field(..., min_length=1, max_length=128)
    status: CampaignStatus = "running"
    kind: str = Field("campaign", max_length=32, description="campaign | nightly | tune | ...")
    labels: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    flow_run_id: str | None = Field(None, max_length=64)
    is_baseline: bool = False
    created_at: AwareDatetime = Field(default_factory=utcnow)
    updated_at: AwareDatetime = Field(default_factory=utcnow, description="when this write was made")
    finished_at: AwareDatetime | None = None
    schema_version: int = SCHEMA_VERSION


class BackendRow(_Row):
    name: str = Field(..., min_length=1, max_length=128)
    kind: str = Field(..., max_length=16)
    launcher: str = Field(..., max_length=16)
    image: str | None = None
    image_digest: str | None = Field(None, max_length=128)
    engine_args: dict[str, Any] = Field(default_factory=dict)
    command: list[Any] | None = Field(None, description="the rendered command line")
    content_hash: str = Field(..., min_length=1, max_length=128)


#: The typed records live in benchflow.results_types; the store's historical names stay usable.
AggregateInput = AggregateRow
ComparisonInput = ComparisonRow


def _dump(model: BaseModel) -> dict[str, Any]:
    return json_safe(model.model_dump(mode="json"))


# ---- op builders: validate now, so a bad row fails at the caller, not at replay ---------------


def campaign_op(row: CampaignRow | Mapping[str, Any]) -> Op:
    return _op("campaign", {"row": _dump(CampaignRow.model_validate(row))})


def campaign_status_op(campaign_id: str, status: CampaignStatus, finished_at: datetime | None = None) -> Op:
    now = utcnow()
    if finished_at is None and status != "running":
        finished_at = now
    args = {"campaign_id": campaign_id, "status": status, "finished_at": finished_at, "updated_at": now}
    return _op("campaign_status", json_safe(args))


def pin_baseline_op(campaign_id: str, pinned: bool = True) -> Op:
    return _op("pin_baseline", {"campaign_id": campaign_id, "pinned": bool(pinned)})


def _without_campaign_id(campaign_id: str, row: BaseModel | Mapping[str, Any]) -> Any:
    """Rows may repeat their campaign id; it must then agree with the one given."""
    if isinstance(row, Mapping) and "campaign_id" in row:
        if row["campaign_id"] != campaign_id:
            raise ValueError(f"row campaign_id {row['campaign_id']!r} != {campaign_id!r}")
        return {k: v for k, v in row.items() if k != "campaign_id"}
    return row


def backend_op(campaign_id: str, row: BackendRow | Mapping[str, Any]) -> Op:
    row = BackendRow.model_validate(_without_campaign_id(campaign_id, row))
    return _op("backend", {"campaign_id": campaign_id, "row": _dump(row)})


def cell_op(campaign_id: str, row: CellRow | Mapping[str, Any]) -> Op:
    row = CellRow.model_validate(_without_campaign_id(campaign_id, row))
    return _op("cell", {"campaign_id": campaign_id, "row": _dump(row)})


def summary_op(campaign_id: str, cell_id: str, summary: CellSummary | Mapping[str, Any]) -> Op:
    """Every stored summary carries a ``schema_version`` (the current one when it has none)."""
    data = CellSummary.model_validate(summary).to_dict()
    return _op("summary", {"campaign_id": campaign_id, "cell_id": cell_id, "summary": json_safe(data)})


def aggregates_op(campaign_id: str, rows: Iterable[AggregateRow | Mapping[str, Any]]) -> Op:
    dumped = [_dump(AggregateRow.model_validate(r)) for r in rows]
    return _op("aggregates", {"campaign_id": campaign_id, "rows": dumped})


def comparisons_op(campaign_id: str, rows: Iterable[ComparisonRow | Mapping[str, Any]]) -> Op:
    dumped = [_dump(ComparisonRow.model_validate(r)) for r in rows]
    return _op("comparisons", {"campaign_id": campaign_id, "rows": dumped})


def manifest_op(campaign_id: str, manifest: Mapping[str, Any]) -> Op:
    return _op("manifest", {"campaign_id": campaign_id, "manifest": json_safe(dict(manifest))})


def artifact_op(campaign_id: str, ref: Any, created_at: datetime | None = None) -> Op:
    data = ref.to_dict() if hasattr(ref, "to_dict") else dict(ref)
    data = {k: data[k] for k in ("key", "uri", "sha256", "size_bytes")}
    data["created_at"] = created_at or utcnow()
    return _op("artifact", json_safe({"campaign_id": campaign_id, "ref": data}))


def health_report_op(report: Any, campaign_id: str | None = None) -> Op:
    """Fixes hostname, checked_at and the content-derived id of a GPU health report."""
    report = json_safe(report)  # a dict, a pydantic model or a dataclass
    if not isinstance(report, dict):
        raise ValueError(f"a health report must be a mapping, not {type(report).__name__}")
    checked = _DATETIME.validate_python(report["checked_at"]) if report.get("checked_at") else utcnow()
    checked = checked if checked.tzinfo else checked.replace(tzinfo=UTC)  # naive: taken as UTC
    checked_at = checked.astimezone(UTC).isoformat()
    hostname = str(report.get("hostname") or socket.gethostname())
    canonical = json.dumps({"hostname": hostname, "checked_at": checked_at, "report": report}, sort_keys=True)
    args = {
        "id": hashlib.sha256(canonical.encode()).hexdigest()[:32],
        "hostname": hostname,
        "checked_at": checked_at,
        "healthy": bool(report.get("healthy", False)),
        "campaign_id": campaign_id,
        "report": report,
    }
    return _op("health_report", args)


# ---- from a CampaignSpec (duck-typed: the store does not import the spec module) ---------------


def campaign_fields_from_spec(spec: Any) -> dict[str, Any]:
    """name, description, labels, spec (JSON) and spec_hash of a CampaignSpec or a spec dict."""
    if hasattr(spec, "model_dump") and hasattr(spec, "content_hash"):
        return {"name": spec.name, "description": getattr(spec, "description", None) or None,
                "labels": dict(getattr(spec, "labels", {}) or {}), "spec": redact_spec(spec.model_dump(mode="json")),
                "spec_hash": spec.content_hash()}
    data = redact_spec(dict(spec))
    out: dict[str, Any] = {"spec": data, "labels": dict(data.get("labels") or {})}
    if data.get("name"):
        out["name"] = data["name"]
    if data.get("description"):
        out["description"] = data["description"]
    return out


def _effective_engine_args(backend: Any) -> dict[str, Any]:
    effective = getattr(backend, "effective_engine_args", None)
    return dict(effective()) if callable(effective) else dict(backend.engine_args)


def backend_row(backend: Any) -> BackendRow:
    """The ``backends`` row of one BackendSpec.

    ``command`` is the spec's full command when it has one, else the rendered engine flags.
    ``engine_args`` are the effective ones: the spec's plus the native flags of its ``quantization``
    (what the engine was started with, and what the report's setup lines show).
    """
    command = backend.command if getattr(backend, "command", None) else backend.render_engine_args()
    image = getattr(backend, "image_ref", None) if backend.launcher == "docker" else None
    return BackendRow(name=backend.name, kind=backend.kind, launcher=backend.launcher, image=image,
                      engine_args=json_safe(redact_mapping(_effective_engine_args(backend))),
                      command=redact_command([str(a) for a in command]),
                      content_hash=backend.content_hash())


def backend_rows_from_spec(spec: Any) -> list[dict[str, Any]]:
    """One ``backends`` row per BackendSpec of a CampaignSpec ([] for a plain dict).

    Pass explicit rows to ``persist_campaign(backends=...)`` to record the launcher's exact command.
    """
    return [backend_row(b).model_dump() for b in getattr(spec, "backends", None) or []
            if hasattr(b, "content_hash")]


# ---- the summary dict (benchflow.stats.summarize) as real columns -----------------------------


def summary_columns(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The METRICS.md keys of a per-cell summary, flattened to the cell_summaries columns."""
    cols: dict[str, Any] = {}
    for key in SUMMARY_COLUMN_KEYS:
        cols[key.column] = _float(key.raw(summary))
    for key in ("request_throughput", "output_throughput", "total_throughput", "goodput", "slo_attainment",
                "error_rate", "duration_s", "target_rate", "achieved_rate"):
        cols[key] = _float(summary.get(key))
    for key in ("completed", "failed", "incomplete"):
        value = summary.get(key)
        cols[key] = int(value) if value is not None else None
    estimated = summary.get("tokens_estimated")
    cols["tokens_estimated"] = bool(estimated) if estimated is not None else None
    invalid = summary.get("invalid")
    cols["invalid"] = None if invalid in (None, False, "") else str(invalid)
    version = summary.get("schema_version")
    cols["schema_version"] = int(version) if version is not None else None
    return cols


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
