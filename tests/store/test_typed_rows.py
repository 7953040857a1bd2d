"""Typed records (benchflow.results_types) round-trip through the store, on SQLite and Postgres,
and every stored summary carries a schema_version."""

from __future__ import annotations

import json

import pytest

from benchflow import SCHEMA_VERSION, analysis
from benchflow.results_types import AggregateRow, CellRow, CellSummary, ComparisonRow
from benchflow.store import rows
from benchflow.store.db import ResultStore
from tests.store import factories as f


def _campaign(store: ResultStore, campaign_id: str = "camp-1") -> None:
    store.upsert_campaign(campaign_id, name="nightly-sweep", spec=f.spec(), spec_hash="spec-hash-1")


def test_aggregate_and_comparison_records_round_trip(store: ResultStore):
    _campaign(store)
    agg = AggregateRow.model_validate(f.aggregate())
    cmp_ = ComparisonRow.model_validate(f.comparison())
    store.upsert_aggregates("camp-1", [agg])
    store.upsert_comparisons("camp-1", [cmp_])
    assert store.aggregate_records("camp-1") == [agg]
    assert store.comparison_records("camp-1") == [cmp_]
    (back,) = store.aggregate_records("camp-1")
    assert back.schema_version == SCHEMA_VERSION and back.model_extra == {"confidence": 0.95}
    assert back.metric_key.column == "ttft_ms_p99"


def test_cell_and_summary_records_round_trip(store: ResultStore):
    _campaign(store)
    cell = CellRow.model_validate(f.cell("c-0"))
    summary = CellSummary.model_validate(f.summary())
    store.upsert_cell("camp-1", cell)
    store.upsert_summary("camp-1", "c-0", summary)
    assert store.cell_records("camp-1") == [cell]
    back = store.summary_records("camp-1")["c-0"]
    assert back == summary and back.to_dict() == f.summary()
    assert back.value("ttft_ms.p99") == pytest.approx(100.0)


def test_every_stored_summary_carries_a_schema_version(store: ResultStore):
    _campaign(store)
    old = {k: v for k, v in f.summary().items() if k != "schema_version"}  # e.g. an old spooled write
    store.upsert_cell("camp-1", f.cell("c-0"))
    store.upsert_summary("camp-1", "c-0", old)
    (row,) = store.summaries("camp-1")
    assert row["schema_version"] == SCHEMA_VERSION and row["summary"]["schema_version"] == SCHEMA_VERSION
    assert {k: v for k, v in row["summary"].items() if k != "schema_version"} == old


def test_summary_op_is_json_and_keeps_only_given_keys():
    op = rows.summary_op("camp-1", "c-0", {"ttft_ms": {"p99": 5.0}, "mode": "closed"})
    assert json.loads(json.dumps(op.args))["summary"] == {"ttft_ms": {"p99": 5.0}, "mode": "closed",
                                                          "schema_version": SCHEMA_VERSION}


def test_analysis_returns_typed_rows_that_also_read_as_dicts():
    cells = [{"cell_id": f"{b}-{r}", "backend_name": b, "load_label": "c16", "status": "completed",
              "summary": f.summary(ttft_ms=40.0 + r + (10 if b == "vllm-b" else 0))}
             for b in ("vllm-a", "vllm-b") for r in range(3)]
    aggs = analysis.aggregate_rows(cells, ["ttft_ms.p99"])
    cmps = analysis.comparison_rows(cells, ["ttft_ms.p99"], "vllm-a")
    assert all(isinstance(a, AggregateRow) for a in aggs) and all(isinstance(c, ComparisonRow) for c in cmps)
    assert aggs[0]["metric"] == aggs[0].metric == "ttft_ms.p99" and aggs[0].get("nope") is None
    assert dict(aggs[0])["n"] == 3 and "mean" in aggs[0]
    assert cmps[0].verdict == "worse" and cmps[0].tolerance == analysis.DEFAULT_COMPARE_TOLERANCE


def test_rows_stored_before_records_had_a_version_read_as_version_1():
    stored = {**f.aggregate(), "campaign_id": "camp-1", "detail": {"confidence": 0.95}}
    del stored["confidence"]
    assert AggregateRow.from_stored(stored).schema_version == 1


def test_backend_row_of_one_backend_is_the_spec_row_and_takes_an_image_digest(store: ResultStore):
    from benchflow.spec import load_spec

    spec = load_spec({
        "name": "s", "allow_simulated": True, "model": "m",
        "backends": [{"name": "v", "kind": "vllm", "engine_args": {"max-num-seqs": 8}}],
        "workload": {"dataset": "D(8,8)", "load_points": [{"concurrency": 1}], "max_requests": 1},
    })
    row = rows.backend_row(spec.backends[0])
    assert row.model_dump() == rows.backend_rows_from_spec(spec)[0]
    _campaign(store)
    digest = "sha256:" + "cd" * 32
    store.upsert_backend("camp-1", row.model_copy(update={"image": "vllm/vllm-openai:x", "image_digest": digest}))
    (stored,) = store.backends("camp-1")
    assert stored["image_digest"] == digest and stored["engine_args"] == {"max-num-seqs": 8}


def test_persisted_cell_writes_summary_json_with_a_schema_version(tmp_benchflow_home):
    from benchflow.store import keys
    from benchflow.store.results import Results

    results = Results.from_env()
    results.store.upgrade()
    results.persist_campaign("camp-1", f.spec(), name="nightly-sweep", spec_hash="h")
    old = {k: v for k, v in f.summary().items() if k != "schema_version"}
    outcome = results.persist_cell("camp-1", CellRow.model_validate(f.cell("c-0")), CellSummary.model_validate(old))
    assert outcome.stored, outcome
    stored = json.loads(results.artifacts.get_bytes(keys.cell_key("camp-1", "c-0", keys.SUMMARY)))
    assert stored["schema_version"] == SCHEMA_VERSION
    assert results.store.summary_records("camp-1")["c-0"].schema_version == SCHEMA_VERSION


def test_comparison_method_and_reason_are_real_columns_not_detail(store: ResultStore):
    _campaign(store)
    row = ComparisonRow.model_validate({**f.comparison(), "verdict": "insufficient data", "ratio": None,
                                        "ci_low": None, "ci_high": None, "method": "welch-delta",
                                        "reason": "no valid cells of vllm-b at c16 (3 failed)"})
    assert {"method", "reason"} <= set(ComparisonRow.model_fields)
    assert {"method", "reason"}.isdisjoint(row.db_columns()["detail"])
    store.upsert_comparisons("camp-1", [row])
    (stored,) = store.comparisons("camp-1")
    assert stored["method"] == "welch-delta" and stored["reason"].startswith("no valid cells of vllm-b")
    assert {"method", "reason"}.isdisjoint(stored["detail"] or {})
    assert store.comparison_records("camp-1") == [row]


def test_insufficient_comparison_rows_are_typed_and_cell_statuses_include_stalled_and_cancelled():
    cells = [{"cell_id": f"{b}-{r}", "backend_name": b, "load_label": "c16",
              "status": "completed" if b == "vllm-a" else "failed", "error": "boom",
              "summary": f.summary(ttft_ms=40.0 + r)}
             for b in ("vllm-a", "vllm-b") for r in range(3)]
    (cmp_,) = analysis.comparison_rows(cells, ["ttft_ms.p99"], "vllm-a")
    assert isinstance(cmp_, ComparisonRow) and cmp_.verdict == "insufficient data"
    assert cmp_.method and "vllm-b" in cmp_.reason and "boom" in cmp_.reason
    for status in ("stalled", "cancelled"):
        assert CellRow.model_validate({**f.cell("c-0"), "status": status}).status == status
