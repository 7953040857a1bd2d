"""initial results schema: campaigns, backends, cells, summaries, aggregates, comparisons,
GPU health reports, run manifests and artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Migrations are frozen: they use plain SQLAlchemy types, never benchflow's models, so that a
later change to the models cannot change what an old migration does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _at(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _campaign_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE")


def _summary_metric_columns() -> list[sa.Column]:
    cols = [
        sa.Column(f"{metric}_{stat}", sa.Float(), nullable=True)
        for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ntpot_ms")
        for stat in ("mean", "p50", "p90", "p95", "p99")
    ]
    floats = ("client_lag_ms_p99", "request_throughput", "output_throughput", "total_throughput",
              "goodput", "slo_attainment", "error_rate")
    cols += [sa.Column(name, sa.Float(), nullable=True) for name in floats]
    cols += [sa.Column(name, sa.Integer(), nullable=True) for name in ("completed", "failed", "incomplete")]
    cols += [sa.Column(name, sa.Float(), nullable=True) for name in ("duration_s", "target_rate", "achieved_rate")]
    return cols


def _create_campaigns() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("labels", _json(), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("is_baseline", sa.Boolean(), nullable=False),
        _at("created_at", False),
        _at("updated_at", False),
        _at("finished_at", True),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for col in ("kind", "name", "status"):
        op.create_index(f"ix_campaigns_{col}", "campaigns", [col])


def _create_backends_and_cells() -> None:
    op.create_table(
        "backends",
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("launcher", sa.String(16), nullable=False),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("image_digest", sa.String(128), nullable=True),
        sa.Column("engine_args", _json(), nullable=False),
        sa.Column("command", _json(), nullable=True),
        sa.Column("content_hash", sa.String(128), nullable=False),
        _campaign_fk(),
        sa.PrimaryKeyConstraint("campaign_id", "name"),
    )
    op.create_table(
        "cells",
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("cell_id", sa.String(128), nullable=False),
        sa.Column("backend_name", sa.String(128), nullable=False),
        sa.Column("load_label", sa.String(64), nullable=False),
        sa.Column("load_point", _json(), nullable=False),
        sa.Column("repetition", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _at("started_at", True),
        _at("finished_at", True),
        sa.Column("window_s", sa.Float(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("gpu_uuids", _json(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("invalid_reason", sa.Text(), nullable=True),
        sa.Column("artifact_uris", _json(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _campaign_fk(),
        sa.PrimaryKeyConstraint("campaign_id", "cell_id"),
    )
    op.create_index("ix_cells_campaign_status", "cells", ["campaign_id", "status"])
    op.create_table(
        "cell_summaries",
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("cell_id", sa.String(128), nullable=False),
        *_summary_metric_columns(),
        sa.Column("tokens_estimated", sa.Boolean(), nullable=True),
        sa.Column("invalid", sa.Text(), nullable=True),
        sa.Column("schema_version", sa.Integer(), nullable=True),
        sa.Column("summary", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id", "cell_id"], ["cells.campaign_id", "cells.cell_id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "cell_id"),
    )


def _create_statistics() -> None:
    op.create_table(
        "aggregates",
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("backend_name", sa.String(128), nullable=False),
        sa.Column("load_label", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        *[sa.Column(c, sa.Float(), nullable=True) for c in ("mean", "std", "ci_low", "ci_high")],
        sa.Column("ci_method", sa.String(16), nullable=True),
        *[sa.Column(c, sa.Float(), nullable=True) for c in ("t_low", "t_high")],
        sa.Column("values", _json(), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        _campaign_fk(),
        sa.PrimaryKeyConstraint("campaign_id", "backend_name", "load_label", "metric"),
    )
    op.create_table(
        "comparisons",
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("baseline_ref", sa.String(256), nullable=False),
        sa.Column("candidate_ref", sa.String(256), nullable=False),
        sa.Column("load_label", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        *[sa.Column(c, sa.Float(), nullable=True) for c in ("ratio", "ci_low", "ci_high")],
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("baseline_campaign_id", sa.String(128), nullable=True),
        sa.Column("detail", _json(), nullable=False),
        _campaign_fk(),
        sa.PrimaryKeyConstraint("campaign_id", "kind", "baseline_ref", "candidate_ref", "load_label", "metric"),
    )


def _create_provenance() -> None:
    op.create_table(
        "gpu_health_reports",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        _at("checked_at", False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("campaign_id", sa.String(128), nullable=True),
        sa.Column("report", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for col in ("campaign_id", "checked_at", "hostname"):
        op.create_index(f"ix_gpu_health_reports_{col}", "gpu_health_reports", [col])
    op.create_table(
        "run_manifests",
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("hostname", sa.String(255), nullable=True),
        sa.Column("python_version", sa.String(64), nullable=True),
        sa.Column("os", sa.String(255), nullable=True),
        *[sa.Column(c, sa.String(64), nullable=True) for c in ("benchflow_version", "driver_version", "cuda_version")],
        sa.Column("packages", _json(), nullable=False),
        sa.Column("artifacts", _json(), nullable=False),
        sa.Column("manifest", _json(), nullable=False),
        _campaign_fk(),
        sa.PrimaryKeyConstraint("campaign_id"),
    )
    op.create_table(
        "artifacts",
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _at("created_at", False),
        _campaign_fk(),
        sa.PrimaryKeyConstraint("campaign_id", "key"),
    )


def upgrade() -> None:
    _create_campaigns()
    _create_backends_and_cells()
    _create_statistics()
    _create_provenance()


def downgrade() -> None:
    for table in ("artifacts", "run_manifests", "gpu_health_reports", "comparisons", "aggregates",
                  "cell_summaries", "cells", "backends", "campaigns"):
        op.drop_table(table)
