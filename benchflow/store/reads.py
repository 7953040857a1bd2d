"""Queries: plain functions of a session. Most return plain dicts (column name -> value); the
``*_records`` functions return the typed records of :mod:`benchflow.results_types` (what the engine,
the analysis and the flows read)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from benchflow.results_types import AggregateRow, CellRow, CellSummary, ComparisonRow
from benchflow.store import models as m


def as_dict(obj: m.Base) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


def get_campaign(session: Session, campaign_id: str) -> dict[str, Any] | None:
    obj = session.get(m.Campaign, campaign_id)
    return as_dict(obj) if obj is not None else None


def _campaign_filter(stmt: Any, **equal: str | None) -> Any:
    """``stmt`` restricted to campaigns whose given columns equal the given (non-None) values."""
    for column, value in equal.items():
        if value is not None:
            stmt = stmt.where(getattr(m.Campaign, column) == value)
    return stmt


def campaigns(session: Session, *, name: str | None = None, status: str | None = None,
              kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first."""
    stmt = _campaign_filter(select(m.Campaign), name=name, status=status, kind=kind)
    stmt = stmt.order_by(m.Campaign.created_at.desc(), m.Campaign.id.desc()).limit(limit)
    return [as_dict(c) for c in session.scalars(stmt)]


def latest_campaign(session: Session, *, name: str | None = None, status: str | None = "completed",
                    kind: str | None = None, before: datetime | None = None,
                    exclude_id: str | None = None) -> dict[str, Any] | None:
    """The most recent campaign (by finish time, else creation time) matching the filters.

    ``before`` keeps campaigns created strictly before that instant: the previous nightly run.
    """
    when = func.coalesce(m.Campaign.finished_at, m.Campaign.created_at)
    stmt = _campaign_filter(select(m.Campaign), name=name, status=status, kind=kind)
    if before is not None:
        stmt = stmt.where(m.Campaign.created_at < before)
    if exclude_id is not None:
        stmt = stmt.where(m.Campaign.id != exclude_id)
    obj = session.scalars(stmt.order_by(when.desc(), m.Campaign.id.desc()).limit(1)).first()
    return as_dict(obj) if obj is not None else None


def pinned_baseline(session: Session, name: str) -> dict[str, Any] | None:
    stmt = (select(m.Campaign).where(m.Campaign.name == name, m.Campaign.is_baseline.is_(True))
            .order_by(m.Campaign.created_at.desc()).limit(1))
    obj = session.scalars(stmt).first()
    return as_dict(obj) if obj is not None else None


def completed_cell_ids(session: Session, campaign_id: str) -> set[str]:
    stmt = select(m.Cell.cell_id).where(m.Cell.campaign_id == campaign_id, m.Cell.status == "completed")
    return set(session.scalars(stmt))


def backends(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    stmt = select(m.Backend).where(m.Backend.campaign_id == campaign_id).order_by(m.Backend.name)
    return [as_dict(b) for b in session.scalars(stmt)]


def cells(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    stmt = select(m.Cell).where(m.Cell.campaign_id == campaign_id).order_by(m.Cell.position, m.Cell.cell_id)
    return [as_dict(c) for c in session.scalars(stmt)]


def summaries(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    """Each summary row, with its cell's backend_name, load_label, repetition, position and status."""
    stmt = (
        select(m.CellSummary, m.Cell)
        .join(m.Cell, (m.Cell.campaign_id == m.CellSummary.campaign_id) & (m.Cell.cell_id == m.CellSummary.cell_id))
        .where(m.CellSummary.campaign_id == campaign_id)
        .order_by(m.Cell.position, m.Cell.cell_id)
    )
    out = []
    for summary, cell in session.execute(stmt):
        row = as_dict(summary)
        row.update({k: getattr(cell, k) for k in ("backend_name", "load_label", "repetition", "position", "status")})
        out.append(row)
    return out


def aggregates(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    t = m.AggregateRow
    stmt = select(t).where(t.campaign_id == campaign_id).order_by(t.backend_name, t.load_label, t.metric)
    return [as_dict(a) for a in session.scalars(stmt)]


def comparisons(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    t = m.ComparisonRow
    stmt = (select(t).where(t.campaign_id == campaign_id)
            .order_by(t.kind, t.baseline_ref, t.candidate_ref, t.load_label, t.metric))
    return [as_dict(c) for c in session.scalars(stmt)]


def aggregate_records(session: Session, campaign_id: str) -> list[AggregateRow]:
    """:func:`aggregates` as typed records (``detail`` merged back)."""
    return [AggregateRow.from_stored(row) for row in aggregates(session, campaign_id)]


def comparison_records(session: Session, campaign_id: str) -> list[ComparisonRow]:
    """:func:`comparisons` as typed records (``detail`` merged back)."""
    return [ComparisonRow.from_stored(row) for row in comparisons(session, campaign_id)]


def summary_records(session: Session, campaign_id: str) -> dict[str, CellSummary]:
    """``cell_id -> CellSummary`` of a campaign (the stored summary JSON, typed)."""
    return {row["cell_id"]: CellSummary.model_validate(row["summary"] or {}) for row in summaries(session, campaign_id)}


def cell_records(session: Session, campaign_id: str) -> list[CellRow]:
    """:func:`cells` as typed records."""
    fields = set(CellRow.model_fields) - {"schema_version"}
    return [CellRow.model_validate({k: v for k, v in row.items() if k in fields})
            for row in cells(session, campaign_id)]


def manifest(session: Session, campaign_id: str) -> dict[str, Any] | None:
    obj = session.get(m.RunManifest, campaign_id)
    return as_dict(obj) if obj is not None else None


def artifacts(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    stmt = select(m.Artifact).where(m.Artifact.campaign_id == campaign_id).order_by(m.Artifact.key)
    return [as_dict(a) for a in session.scalars(stmt)]


def health_reports(session: Session, *, campaign_id: str | None = None, hostname: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
    """Newest first."""
    t = m.GpuHealthReport
    stmt = select(t)
    if campaign_id is not None:
        stmt = stmt.where(t.campaign_id == campaign_id)
    if hostname is not None:
        stmt = stmt.where(t.hostname == hostname)
    return [as_dict(r) for r in session.scalars(stmt.order_by(t.checked_at.desc(), t.id).limit(limit))]


def row_counts(session: Session) -> dict[str, int]:
    """Rows per table: what an idempotency check compares."""
    out = {}
    for table in m.Base.metadata.sorted_tables:
        out[table.name] = session.execute(select(func.count()).select_from(table)).scalar_one()
    return out
