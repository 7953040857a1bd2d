"""The documented example queries in sql/queries run on a populated database and answer correctly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from benchflow.store.db import ResultStore
from tests.store import factories as f

QUERIES = Path(__file__).resolve().parents[2] / "sql" / "queries"


def _run(store: ResultStore, name: str) -> list[dict]:
    sql = (QUERIES / name).read_text()
    with store.session() as s:
        return [dict(row._mapping) for row in s.execute(text(sql))]


def _campaign(store: ResultStore, cid: str, *, model: str, kind: str = "campaign", created_at=None,
              status: str = "completed") -> None:
    store.upsert_campaign(cid, name=f"sweep-{model}", spec=f.spec(model), spec_hash=f"h-{cid}", kind=kind,
                          created_at=created_at)
    store.set_campaign_status(cid, status)


def _cells(store: ResultStore, cid: str, backend: str, goodputs: list[float], *, ttft_ms: float = 40.0,
           invalid: set[int] = frozenset(), start: int = 0) -> None:
    for rep, goodput in enumerate(goodputs):
        cell_id = f"{cid}-{backend}-{rep}"
        store.upsert_cell(cid, f.cell(cell_id, backend_name=backend, repetition=rep, position=start + rep))
        reason = "achieved rate 80% of target" if rep in invalid else None
        store.upsert_summary(cid, cell_id, f.summary(ttft_ms=ttft_ms + rep, goodput=goodput, invalid=reason))


@pytest.fixture
def populated(store: ResultStore) -> ResultStore:
    _campaign(store, "a1", model="llama-8b")
    store.upsert_backend("a1", f.backend("vllm-a", 64))
    store.upsert_backend("a1", f.backend("vllm-b", 256))
    _cells(store, "a1", "vllm-a", [9.0, 10.0, 11.0])
    _cells(store, "a1", "vllm-b", [12.0, 13.0, 99.0], invalid={2}, start=3)  # the 99 is invalid
    _campaign(store, "b1", model="qwen-7b")
    store.upsert_backend("b1", f.backend("vllm-a", 32))
    _cells(store, "b1", "vllm-a", [5.0, 7.0])
    store.upsert_cell("b1", f.cell("b1-fail", position=9, status="failed", error="backend did not become ready"))
    store.upsert_cell("b1", f.cell("b1-skip", position=10, status="skipped", error="GPU unhealthy: ECC errors"))
    _campaign(store, "r1", model="llama-8b", status="running")  # unfinished: ignored by the ranking
    store.upsert_backend("r1", f.backend("vllm-a", 999))
    _cells(store, "r1", "vllm-a", [500.0])
    return store


def test_best_config_per_model(populated: ResultStore):
    rows = {r["model"]: r for r in _run(populated, "best_config_per_model.sql")}
    assert set(rows) == {"llama-8b", "qwen-7b"}
    best = rows["llama-8b"]
    assert (best["backend"], best["campaign_id"], best["repetitions"]) == ("vllm-b", "a1", 2)
    assert best["goodput_mean"] == pytest.approx(12.5)
    assert rows["qwen-7b"]["goodput_mean"] == pytest.approx(6.0)


def test_failed_cells_lists_failures_with_reasons(populated: ResultStore):
    rows = _run(populated, "failed_cells.sql")
    by_cell = {r["cell_id"]: r for r in rows}
    assert set(by_cell) == {"b1-fail", "b1-skip", "a1-vllm-b-2"}
    assert by_cell["b1-fail"]["reason"] == "backend did not become ready"
    assert by_cell["b1-skip"]["failure"] == "skipped"
    assert (by_cell["a1-vllm-b-2"]["failure"], by_cell["a1-vllm-b-2"]["reason"]) == (
        "invalid", "achieved rate 80% of target")


@pytest.mark.integration
def test_metric_trend_nightly_on_postgres(pg_url: str):
    store = ResultStore(pg_url)
    store.upgrade()
    now = datetime.now(UTC)
    for days_ago, ttft in ((120, 10.0), (10, 40.0), (5, 50.0), (1, 60.0)):
        cid = f"night-{days_ago}"
        _campaign(store, cid, model="llama-8b", kind="nightly", created_at=now - timedelta(days=days_ago))
        _cells(store, cid, "vllm-a", [1.0, 1.0], ttft_ms=ttft)
    _campaign(store, "adhoc", model="llama-8b", created_at=now - timedelta(days=2))
    _cells(store, "adhoc", "vllm-a", [1.0], ttft_ms=999.0)

    rows = _run(store, "metric_trend_nightly.sql")
    assert [r["campaign_id"] for r in rows] == ["night-10", "night-5", "night-1"]
    # p99 = 2.5 x the base TTFT; repetitions have bases ttft and ttft + 1
    assert [r["ttft_ms_p99_mean"] for r in rows] == pytest.approx([2.5 * 40.5, 2.5 * 50.5, 2.5 * 60.5])
    assert all(r["repetitions"] == 2 for r in rows)
    store.dispose()
