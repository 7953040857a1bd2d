"""Writers: each applies one :class:`~benchflow.store.rows.Op` inside a session.

Every writer is an idempotent upsert (``INSERT ... ON CONFLICT DO UPDATE`` on SQLite and
Postgres) keyed by the table's natural primary key, so running an op twice leaves the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from benchflow.errors import CampaignMismatchError, StorageError
from benchflow.store import models as m
from benchflow.results_types import AggregateRow, CellRow, CellSummary, ComparisonRow
from benchflow.store.rows import BackendRow, CampaignRow, summary_columns


def upsert(session: Session, model: type[m.Base], rows: Sequence[Mapping[str, Any]], *,
           keep: Collection[str] = (), newer_by: str | None = None) -> None:
    """Inserts ``rows``; on a primary-key conflict updates every column except the key and ``keep``
    (only when the incoming ``newer_by`` column is not older than the stored one, if given)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise StorageError(f"unsupported database dialect {dialect!r} (use postgresql or sqlite)")
    table = model.__table__
    stmt = insert(table).values([dict(r) for r in rows])
    pk = [c.name for c in table.primary_key.columns]
    changes = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in pk and c.name not in keep}
    if changes:
        where = table.c[newer_by] <= stmt.excluded[newer_by] if newer_by else None
        stmt = stmt.on_conflict_do_update(index_elements=pk, set_=changes, where=where)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=pk)
    session.execute(stmt)


def write_campaign(session: Session, row: Mapping[str, Any]) -> None:
    data = CampaignRow.model_validate(row).model_dump()
    existing = session.get(m.Campaign, data["id"])
    if existing is not None and existing.spec_hash != data["spec_hash"]:
        raise CampaignMismatchError(
            f"campaign id {data['id']!r} already exists with a different spec "
            f"(stored spec hash {existing.spec_hash[:12]}, this one {data['spec_hash'][:12]}); "
            "use a new campaign id"
        )
    # created_at and the baseline pin belong to the first write and to pin_baseline; a replayed
    # older write (from the spool) does not undo a newer one.
    upsert(session, m.Campaign, [data], keep=("created_at", "is_baseline"), newer_by="updated_at")


def write_campaign_status(session: Session, campaign_id: str, status: str, finished_at: str | None,
                          updated_at: str) -> None:
    if session.get(m.Campaign, campaign_id) is None:
        raise StorageError(f"no campaign {campaign_id!r} to set status {status!r} on")
    when = datetime.fromisoformat(updated_at)
    session.execute(
        update(m.Campaign)
        .where(m.Campaign.id == campaign_id, m.Campaign.updated_at <= when)
        .values(status=status, finished_at=datetime.fromisoformat(finished_at) if finished_at else None,
                updated_at=when)
    )


def write_pin_baseline(session: Session, campaign_id: str, pinned: bool) -> None:
    campaign = session.get(m.Campaign, campaign_id)
    if campaign is None:
        raise StorageError(f"no campaign {campaign_id!r} to pin as a baseline")
    if pinned:  # one pinned baseline per campaign name
        session.execute(
            update(m.Campaign).where(m.Campaign.name == campaign.name, m.Campaign.id != campaign_id)
            .values(is_baseline=False)
        )
    campaign.is_baseline = pinned


def write_backend(session: Session, campaign_id: str, row: Mapping[str, Any]) -> None:
    data = BackendRow.model_validate(row).model_dump()
    upsert(session, m.Backend, [{"campaign_id": campaign_id, **data}])


def write_cell(session: Session, campaign_id: str, row: Mapping[str, Any]) -> None:
    data = CellRow.model_validate(row).db_columns()
    upsert(session, m.Cell, [{"campaign_id": campaign_id, **data}])


def write_summary(session: Session, campaign_id: str, cell_id: str, summary: Mapping[str, Any]) -> None:
    data = CellSummary.model_validate(summary).to_dict()  # an old spooled summary gains its schema_version
    row = {"campaign_id": campaign_id, "cell_id": cell_id, **summary_columns(data), "summary": data}
    upsert(session, m.CellSummary, [row])


def write_aggregates(session: Session, campaign_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    data = [{"campaign_id": campaign_id, **AggregateRow.model_validate(r).db_columns()} for r in rows]
    upsert(session, m.AggregateRow, data)


def write_comparisons(session: Session, campaign_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    data = [{"campaign_id": campaign_id, **ComparisonRow.model_validate(r).db_columns()} for r in rows]
    upsert(session, m.ComparisonRow, data)


def write_manifest(session: Session, campaign_id: str, manifest: Mapping[str, Any]) -> None:
    def text(key: str) -> str | None:
        value = manifest.get(key)
        return None if value is None else str(value)

    dirty = manifest.get("git_dirty")
    row = {
        "campaign_id": campaign_id,
        **{k: text(k) for k in ("git_commit", "hostname", "python_version", "os", "benchflow_version",
                                "driver_version", "cuda_version")},
        "git_dirty": None if dirty is None else bool(dirty),
        "packages": dict(manifest.get("packages") or {}),
        "artifacts": dict(manifest.get("artifacts") or {}),
        "manifest": dict(manifest),
    }
    upsert(session, m.RunManifest, [row])


def write_artifact(session: Session, campaign_id: str, ref: Mapping[str, Any]) -> None:
    row = dict(ref, campaign_id=campaign_id, created_at=datetime.fromisoformat(ref["created_at"]))
    upsert(session, m.Artifact, [row], keep=("created_at",))


def write_health_report(session: Session, id: str, hostname: str, checked_at: str, healthy: bool,
                        campaign_id: str | None, report: Mapping[str, Any]) -> None:
    row = {"id": id, "hostname": hostname, "checked_at": datetime.fromisoformat(checked_at),
           "healthy": healthy, "campaign_id": campaign_id, "report": dict(report)}
    upsert(session, m.GpuHealthReport, [row])


#: Op name -> writer(session, **op.args).
WRITERS: dict[str, Callable[..., None]] = {
    "campaign": write_campaign,
    "campaign_status": write_campaign_status,
    "pin_baseline": write_pin_baseline,
    "backend": write_backend,
    "cell": write_cell,
    "summary": write_summary,
    "aggregates": write_aggregates,
    "comparisons": write_comparisons,
    "manifest": write_manifest,
    "artifact": write_artifact,
    "health_report": write_health_report,
}


def apply_op(session: Session, name: str, args: Mapping[str, Any]) -> None:
    writer = WRITERS.get(name)
    if writer is None:
        raise StorageError(f"unknown write operation {name!r} (written by a newer benchflow?)")
    writer(session, **args)
