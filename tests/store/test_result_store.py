"""The ResultStore contract, run once on SQLite and once on a real Postgres (``store`` fixture)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from benchflow import SCHEMA_VERSION
from benchflow.errors import CampaignMismatchError, SchemaTooNewError, StorageError, StorageUnavailableError
from benchflow.store.db import ResultStore
from tests.store import factories as f


def _campaign(store: ResultStore, campaign_id: str = "camp-1", **kw) -> None:
    defaults = {"name": "nightly-sweep", "spec": f.spec(), "spec_hash": "spec-hash-1"}
    store.upsert_campaign(campaign_id, **{**defaults, **kw})


def _populate(store: ResultStore, campaign_id: str = "camp-1") -> None:
    _campaign(store, campaign_id)
    store.upsert_backend(campaign_id, f.backend("vllm-a"))
    store.upsert_backend(campaign_id, f.backend("vllm-b", 128))
    for i in range(3):
        store.upsert_cell(campaign_id, f.cell(f"cell-{i}", repetition=i, position=i))
        store.upsert_summary(campaign_id, f"cell-{i}", f.summary(ttft_ms=40.0 + i))
    store.upsert_cell(campaign_id, f.cell("cell-x", status="failed", position=3, error="backend did not start"))
    store.upsert_aggregates(campaign_id, [f.aggregate("vllm-a"), f.aggregate("vllm-b")])
    store.upsert_comparisons(campaign_id, [f.comparison()])
    store.insert_health_report(f.health_report(), campaign_id=campaign_id)
    store.upsert_manifest(campaign_id, {"git_commit": "abc123", "git_dirty": False, "hostname": "h",
                                        "packages": {"pandas": "2.2"}, "artifacts": {"k": "sha"}})
    store.record_artifact(campaign_id, {"key": f"campaigns/{campaign_id}/report.md", "uri": "file:///x/report.md",
                                        "sha256": "0" * 64, "size_bytes": 12})


def _snapshot(store: ResultStore, campaign_id: str = "camp-1") -> dict:
    campaign = store.get_campaign(campaign_id)
    campaign.pop("updated_at")  # bookkeeping: the time of the last write
    return {"campaign": campaign, "backends": store.backends(campaign_id), "cells": store.cells(campaign_id),
            "summaries": store.summaries(campaign_id), "aggregates": store.aggregates(campaign_id),
            "comparisons": store.comparisons(campaign_id), "manifest": store.manifest(campaign_id),
            "artifacts": store.artifacts(campaign_id), "health": store.health_reports(campaign_id=campaign_id)}


def test_writing_everything_twice_changes_nothing(store: ResultStore):
    _populate(store)
    counts, snapshot = store.row_counts(), _snapshot(store)
    _populate(store)
    assert store.row_counts() == counts
    assert _snapshot(store) == snapshot
    assert counts["cells"] == 4 and counts["cell_summaries"] == 3 and counts["gpu_health_reports"] == 1


def test_upsert_updates_a_cell_in_place(store: ResultStore):
    _campaign(store)
    store.upsert_cell("camp-1", f.cell("cell-0", status="failed", error="oom"))
    assert store.completed_cell_ids("camp-1") == set()
    store.upsert_cell("camp-1", {**f.cell("cell-0"), "attempt": 2})
    (row,) = store.cells("camp-1")
    assert (row["status"], row["error"], row["attempt"]) == ("completed", None, 2)
    assert store.completed_cell_ids("camp-1") == {"cell-0"}


def test_summary_metrics_are_real_columns_and_full_dict_is_kept(store: ResultStore):
    _campaign(store)
    store.upsert_cell("camp-1", f.cell("cell-0"))
    summary = f.summary(ttft_ms=40.0, invalid="achieved rate 80% of target")
    summary["tpot_ms"]["p99"] = float("nan")  # stats may leave undefined values as NaN
    store.upsert_summary("camp-1", "cell-0", summary)
    (row,) = store.summaries("camp-1")
    assert row["ttft_ms_p99"] == pytest.approx(100.0)
    assert row["tpot_ms_p99"] is None
    assert row["goodput"] == 9.5 and row["completed"] == 600 and row["tokens_estimated"] is False
    assert row["invalid"] == "achieved rate 80% of target"
    assert row["summary"]["errors"] == {"http_5xx": 2, "timeout": 1}
    assert (row["backend_name"], row["load_label"], row["repetition"]) == ("vllm-a", "c16", 0)
    with store.session() as s:  # filterable in SQL, where people filter
        found = s.execute(text("SELECT cell_id FROM cell_summaries WHERE ttft_ms_p99 > 99")).scalars().all()
    assert found == ["cell-0"]


def test_datetimes_come_back_timezone_aware_utc(store: ResultStore):
    _campaign(store)
    store.upsert_cell("camp-1", f.cell("cell-0"))
    (row,) = store.cells("camp-1")
    assert row["started_at"] == f.T0 and row["started_at"].utcoffset() == timedelta(0)
    assert store.get_campaign("camp-1")["created_at"].tzinfo is not None


def test_status_and_finish_time(store: ResultStore):
    _campaign(store)
    assert store.get_campaign("camp-1")["status"] == "running"
    store.set_campaign_status("camp-1", "completed")
    campaign = store.get_campaign("camp-1")
    assert campaign["status"] == "completed" and campaign["finished_at"] is not None
    with pytest.raises(StorageError, match="no campaign 'nope'"):
        store.set_campaign_status("nope", "failed")


def test_reusing_a_campaign_id_with_another_spec_is_refused(store: ResultStore):
    _campaign(store)
    with pytest.raises(CampaignMismatchError, match="different spec"):
        _campaign(store, spec_hash="another-hash")
    assert store.get_campaign("camp-1")["spec_hash"] == "spec-hash-1"


def test_latest_campaign_finds_the_previous_nightly(store: ResultStore):
    for day in range(3):
        created = f.T0 + timedelta(days=day)
        _campaign(store, f"night-{day}", kind="nightly", created_at=created)
        store.set_campaign_status(f"night-{day}", "completed", finished_at=created + timedelta(hours=1))
    _campaign(store, "night-3", kind="nightly", created_at=f.T0 + timedelta(days=3))  # still running
    _campaign(store, "adhoc", created_at=f.T0 + timedelta(days=5))
    store.set_campaign_status("adhoc", "completed")

    assert store.latest_campaign(name="nightly-sweep", kind="nightly")["id"] == "night-2"
    before = store.get_campaign("night-2")["created_at"]
    assert store.latest_campaign(name="nightly-sweep", kind="nightly", before=before)["id"] == "night-1"
    assert store.latest_campaign(name="nightly-sweep", status="running")["id"] == "night-3"
    assert store.latest_campaign(name="other") is None


def test_pinned_baseline_is_unique_per_name_and_survives_rewrites(store: ResultStore):
    _campaign(store, "a")
    _campaign(store, "b")
    assert store.pinned_baseline("nightly-sweep") is None
    store.pin_baseline("a")
    store.pin_baseline("b")
    assert store.pinned_baseline("nightly-sweep")["id"] == "b"
    assert store.get_campaign("a")["is_baseline"] is False
    _campaign(store, "b")  # re-persisting the campaign keeps the pin
    assert store.pinned_baseline("nightly-sweep")["id"] == "b"


def test_aggregates_and_comparisons_keep_extra_fields(store: ResultStore):
    _campaign(store)
    store.upsert_aggregates("camp-1", [f.aggregate()])
    store.upsert_comparisons("camp-1", [f.comparison()])
    (agg,) = store.aggregates("camp-1")
    assert agg["values"] == [95.0, 100.0, 105.0] and agg["ci_method"] == "bca"
    assert agg["detail"] == {"confidence": 0.95, "schema_version": SCHEMA_VERSION}  # the version rides in detail
    (cmp_,) = store.comparisons("camp-1")
    assert cmp_["verdict"] == "better"
    assert cmp_["detail"] == {"higher_is_better": False, "schema_version": SCHEMA_VERSION}


def test_health_report_id_is_content_derived(store: ResultStore):
    first = store.insert_health_report(f.health_report())
    assert store.insert_health_report(f.health_report()) == first
    other = store.insert_health_report(f.health_report(healthy=False))
    assert other != first
    reports = store.health_reports(hostname="gpu-node-1")
    assert {r["id"] for r in reports} == {first, other}
    assert {r["healthy"] for r in reports} == {True, False}


def test_rows_for_unknown_campaigns_are_rejected(store: ResultStore):
    with pytest.raises(StorageError):
        store.upsert_cell("ghost", f.cell("cell-0"))
    assert store.row_counts()["cells"] == 0


def test_upgrade_is_a_no_op_when_current(store: ResultStore):
    assert store.current_revision() == "0002"
    assert store.upgrade() is False


def test_schema_matches_the_models(store: ResultStore):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from benchflow.store.models import Base

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_a_newer_schema_is_refused(store: ResultStore):
    with store.session() as s:
        s.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    message = "database schema revision 9999_future is newer than this benchflow (knows up to 0002); upgrade benchflow"
    with pytest.raises(SchemaTooNewError) as err:
        store.upgrade()
    assert str(err.value) == message
    with pytest.raises(SchemaTooNewError):
        store.current_revision()


def test_unmigrated_database_says_to_upgrade(db_url: str):
    store = ResultStore(db_url)
    try:
        assert store.current_revision() is None
        with pytest.raises(StorageError) as err:
            _campaign(store)
        assert not isinstance(err.value, StorageUnavailableError)
        if store.dialect == "sqlite":
            assert "benchflow db upgrade" in str(err.value)
        needs = "schema revision none, this benchflow needs 0002; run `benchflow db upgrade`"
        with pytest.raises(StorageError, match=needs):
            store.check_schema()
    finally:
        store.dispose()


@pytest.mark.integration
def test_unreachable_postgres_is_transient_and_hides_the_password():
    from tests.support import free_port

    store = ResultStore(f"postgres://bench:s3cr3t-pw@127.0.0.1:{free_port()}/results")
    assert "s3cr3t-pw" not in repr(store)
    with pytest.raises(StorageUnavailableError) as err:
        store.upsert_cell("camp-1", f.cell("cell-0"))
    assert "s3cr3t-pw" not in str(err.value)
    assert "bench:***@127.0.0.1" in str(err.value)
    assert err.value.__cause__ is not None


def test_concurrent_upgrades_all_succeed(db_url: str):
    from concurrent.futures import ThreadPoolExecutor

    stores = [ResultStore(db_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            ran = list(pool.map(lambda s: s.upgrade(), stores))
        assert all(s.current_revision() == "0002" for s in stores)
        assert ran.count(True) >= 1
        _campaign(stores[0])
        assert stores[1].get_campaign("camp-1") is not None
    finally:
        for s in stores:
            s.dispose()


def test_missing_json_values_are_sql_null(store: ResultStore):
    _campaign(store)
    store.upsert_backend("camp-1", {**f.backend("vllm-a"), "command": None})
    with store.session() as s:
        found = s.execute(text("SELECT name FROM backends WHERE command IS NULL")).scalars().all()
    assert found == ["vllm-a"]


def test_a_late_replay_of_an_old_campaign_write_does_not_undo_a_newer_one(store: ResultStore):
    from benchflow.store import rows as r

    stale_start = r.campaign_op({"id": "camp-1", "name": "nightly-sweep", "spec": f.spec(), "spec_hash": "spec-hash-1",
                                 "status": "running"})  # built while the database was down, spooled
    _campaign(store)
    store.set_campaign_status("camp-1", "completed")
    store.apply([stale_start])  # `benchflow flush` replays it later
    assert store.get_campaign("camp-1")["status"] == "completed"
    stale_status = r.campaign_status_op("camp-1", "failed")
    store.set_campaign_status("camp-1", "partial")
    store.apply([stale_status])
    assert store.get_campaign("camp-1")["status"] == "partial"


def test_health_report_as_a_model_with_a_naive_time(store: ResultStore):
    from datetime import datetime

    from pydantic import BaseModel

    class Report(BaseModel):
        hostname: str
        checked_at: datetime
        healthy: bool

    report_id = store.insert_health_report(Report(hostname="h1", checked_at=datetime(2026, 1, 1, 12), healthy=False))
    (row,) = store.health_reports(hostname="h1")
    assert row["id"] == report_id and row["healthy"] is False
    assert row["checked_at"] == datetime(2026, 1, 1, 12, tzinfo=f.T0.tzinfo)
