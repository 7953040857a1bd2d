"""The results schema as SQLAlchemy 2.0 models.

The tables are created ONLY by the Alembic migrations under ``sql/migrations``; these models
describe them for queries and writes, and a test checks that both agree. The same models serve
SQLite (embedded default) and Postgres (production; JSON columns become JSONB there).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: JSON everywhere, JSONB on Postgres (indexable, compact). Python None is SQL NULL, not JSON null.
JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

#: The stats every latency metric carries as real columns.
LATENCY_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ntpot_ms")
LATENCY_STATS = ("mean", "p50", "p90", "p95", "p99")


class UtcDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: *_at values must be timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType, datetime: UtcDateTime}


def _campaign_fk() -> ForeignKey:
    return ForeignKey("campaigns.id", ondelete="CASCADE")


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    labels: Mapped[dict[str, Any]]
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    schema_version: Mapped[int] = mapped_column(Integer)


class Backend(Base):
    __tablename__ = "backends"

    campaign_id: Mapped[str] = mapped_column(String(128), _campaign_fk(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    launcher: Mapped[str] = mapped_column(String(16))
    image: Mapped[str | None] = mapped_column(Text)
    image_digest: Mapped[str | None] = mapped_column(String(128))
    engine_args: Mapped[dict[str, Any]]
    command: Mapped[list[Any] | None]
    content_hash: Mapped[str] = mapped_column(String(128))


class Cell(Base):
    __tablename__ = "cells"
    __table_args__ = (Index("ix_cells_campaign_status", "campaign_id", "status"),)

    campaign_id: Mapped[str] = mapped_column(String(128), _campaign_fk(), primary_key=True)
    cell_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    backend_name: Mapped[str] = mapped_column(String(128))
    load_label: Mapped[str] = mapped_column(String(64))
    load_point: Mapped[dict[str, Any]]
    repetition: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    window_s: Mapped[float | None] = mapped_column(Float)
    host: Mapped[str | None] = mapped_column(String(255))
    gpu_uuids: Mapped[list[Any]]
    error: Mapped[str | None] = mapped_column(Text)
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    artifact_uris: Mapped[dict[str, Any]]
    attempt: Mapped[int] = mapped_column(Integer)


class CellSummary(Base):
    __tablename__ = "cell_summaries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["campaign_id", "cell_id"], ["cells.campaign_id", "cells.cell_id"], ondelete="CASCADE"
        ),
    )

    campaign_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    cell_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # METRICS.md latency stats as real columns (<metric>_<stat>), see LATENCY_METRICS x LATENCY_STATS
    ttft_ms_mean: Mapped[float | None] = mapped_column(Float)
    ttft_ms_p50: Mapped[float | None] = mapped_column(Float)
    ttft_ms_p90: Mapped[float | None] = mapped_column(Float)
    ttft_ms_p95: Mapped[float | None] = mapped_column(Float)
    ttft_ms_p99: Mapped[float | None] = mapped_column(Float)
    tpot_ms_mean: Mapped[float | None] = mapped_column(Float)
    tpot_ms_p50: Mapped[float | None] = mapped_column(Float)
    tpot_ms_p90: Mapped[float | None] = mapped_column(Float)
    tpot_ms_p95: Mapped[float | None] = mapped_column(Float)
    tpot_ms_p99: Mapped[float | None] = mapped_column(Float)
    itl_ms_mean: Mapped[float | None] = mapped_column(Float)
    itl_ms_p50: Mapped[float | None] = mapped_column(Float)
    itl_ms_p90: Mapped[float | None] = mapped_column(Float)
    itl_ms_p95: Mapped[float | None] = mapped_column(Float)
    itl_ms_p99: Mapped[float | None] = mapped_column(Float)
    e2e_ms_mean: Mapped[float | None] = mapped_column(Float)
    e2e_ms_p50: Mapped[float | None] = mapped_column(Float)
    e2e_ms_p90: Mapped[float | None] = mapped_column(Float)
    e2e_ms_p95: Mapped[float | None] = mapped_column(Float)
    e2e_ms_p99: Mapped[float | None] = mapped_column(Float)
    ntpot_ms_mean: Mapped[float | None] = mapped_column(Float)
    ntpot_ms_p50: Mapped[float | None] = mapped_column(Float)
    ntpot_ms_p90: Mapped[float | None] = mapped_column(Float)
    ntpot_ms_p95: Mapped[float | None] = mapped_column(Float)
    ntpot_ms_p99: Mapped[float | None] = mapped_column(Float)
    client_lag_ms_p99: Mapped[float | None] = mapped_column(Float)
    request_throughput: Mapped[float | None] = mapped_column(Float)
    output_throughput: Mapped[float | None] = mapped_column(Float)
    total_throughput: Mapped[float | None] = mapped_column(Float)
    goodput: Mapped[float | None] = mapped_column(Float)
    slo_attainment: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float | None] = mapped_column(Float)
    completed: Mapped[int | None] = mapped_column(Integer)
    failed: Mapped[int | None] = mapped_column(Integer)
    incomplete: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    target_rate: Mapped[float | None] = mapped_column(Float)
    achieved_rate: Mapped[float | None] = mapped_column(Float)
    tokens_estimated: Mapped[bool | None] = mapped_column(Boolean)
    invalid: Mapped[str | None] = mapped_column(Text)
    schema_version: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]]


class AggregateRow(Base):
    __tablename__ = "aggregates"

    campaign_id: Mapped[str] = mapped_column(String(128), _campaign_fk(), primary_key=True)
    backend_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    load_label: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    mean: Mapped[float | None] = mapped_column(Float)
    std: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    ci_method: Mapped[str | None] = mapped_column(String(16))
    t_low: Mapped[float | None] = mapped_column(Float)
    t_high: Mapped[float | None] = mapped_column(Float)
    values: Mapped[list[Any]]
    detail: Mapped[dict[str, Any]]


class ComparisonRow(Base):
    __tablename__ = "comparisons"

    campaign_id: Mapped[str] = mapped_column(String(128), _campaign_fk(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    baseline_ref: Mapped[str] = mapped_column(String(256), primary_key=True)
    candidate_ref: Mapped[str] = mapped_column(String(256), primary_key=True)
    load_label: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    ratio: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(32))
    tolerance: Mapped[float] = mapped_column(Float)
    baseline_campaign_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]]
    #: How the CI and verdict were computed (e.g. "welch-log-ratio"); migration 0002.
    method: Mapped[str | None] = mapped_column(String(32))
    #: Why the verdict is "not enough repetitions" / "insufficient data", or what n would decide.
    reason: Mapped[str | None] = mapped_column(Text)


class GpuHealthReport(Base):
    __tablename__ = "gpu_health_reports"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), index=True)
    checked_at: Mapped[datetime] = mapped_column(index=True)
    healthy: Mapped[bool] = mapped_column(Boolean)
    campaign_id: Mapped[str | None] = mapped_column(String(128), index=True)
    report: Mapped[dict[str, Any]]


class RunManifest(Base):
    __tablename__ = "run_manifests"

    campaign_id: Mapped[str] = mapped_column(String(128), _campaign_fk(), primary_key=True)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    hostname: Mapped[str | None] = mapped_column(String(255))
    python_version: Mapped[str | None] = mapped_column(String(64))
    os: Mapped[str | None] = mapped_column(String(255))
    benchflow_version: Mapped[str | None] = mapped_column(String(64))
    driver_version: Mapped[str | None] = mapped_column(String(64))
    cuda_version: Mapped[str | None] = mapped_column(String(64))
    packages: Mapped[dict[str, Any]]
    artifacts: Mapped[dict[str, Any]]
    manifest: Mapped[dict[str, Any]]


class Artifact(Base):
    __tablename__ = "artifacts"

    campaign_id: Mapped[str] = mapped_column(String(128), _campaign_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
