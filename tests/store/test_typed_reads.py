"""The typed read path (issue 12): what the engine writes as ``CellRow`` / ``CellSummary`` reads back
from the store as equal records, on SQLite and on real Postgres, and the engine's finish step
consumes those records (no plain dict rows on the way)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from benchflow import analysis, engine
from benchflow.campaign import analysis_input, cell_row, failed_cell_row
from benchflow.results_types import AggregateRow, CellResult, CellRow, CellSummary, ComparisonRow
from benchflow.runner import CellOutcome
from benchflow.store.artifacts import LocalArtifactStore
from benchflow.store.db import ResultStore
from benchflow.store.results import Results
from benchflow.store.spool import Spool
from tests.engine.fakes import make_spec
from tests.store import factories as f

CID = "typed-reads-1"
T0 = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)


def _outcome(cell, status: str = "completed", error: str | None = None, ttft: float = 40.0) -> CellOutcome:
    start = T0 + timedelta(minutes=cell.index)
    summary = f.summary(ttft_ms=ttft) if status == "completed" else None
    return CellOutcome(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                       repetition=cell.repetition, status=status, started_at=start,
                       finished_at=start + timedelta(seconds=30), error=error, summary=summary)


@pytest.fixture
def written(store: ResultStore, tmp_path):
    """A campaign of two backends x two repetitions written the engine's way: b's second cell
    died, and one cell of a never ran (its backend never became ready)."""
    spec = make_spec([{"name": "a", "kind": "sim"}, {"name": "b", "kind": "sim"}], repetitions=3)
    results = Results(store, LocalArtifactStore(tmp_path / "artifacts"), Spool(tmp_path / "spool"))
    assert results.persist_campaign(CID, spec).stored
    rows: dict[str, CellRow] = {}
    summaries: dict[str, CellSummary] = {}
    for cell in spec.cells():
        if cell.backend == "a" and cell.repetition == 2:
            row = failed_cell_row(cell, "backend a never became ready: exit code 1")
            summary = None
        elif cell.backend == "b" and cell.repetition == 1:
            outcome = _outcome(cell, "failed", "backend died during the cell (exit code 1)")
            row, summary = cell_row(cell, outcome, gpu_uuids=["GPU-1"]), outcome.summary
        else:
            outcome = _outcome(cell, ttft=40.0 + cell.repetition + (20 if cell.backend == "b" else 0))
            row, summary = cell_row(cell, outcome, gpu_uuids=["GPU-1"]), outcome.summary
        assert isinstance(row, CellRow)
        assert results.persist_cell(CID, row, summary, {}).stored
        rows[cell.id] = row
        if summary is not None:
            summaries[cell.id] = CellSummary.model_validate(summary)
    return spec, results, rows, summaries


def test_cells_and_summaries_read_back_as_the_records_written(written):
    spec, results, rows, summaries = written
    back = results.store.cell_records(CID)
    assert all(isinstance(c, CellRow) for c in back)
    assert [c.cell_id for c in back] == [c.id for c in spec.cells()]  # in execution order
    for cell in back:
        assert cell == rows[cell.cell_id].model_copy(update={"artifact_uris": cell.artifact_uris})
        assert set(cell.artifact_uris) == ({"summary.json"} if cell.cell_id in summaries else set())
    stored = results.store.summary_records(CID)
    assert all(isinstance(s, CellSummary) for s in stored.values())
    assert stored == summaries
    for cell_id, summary in stored.items():
        assert summary.to_dict() == summaries[cell_id].to_dict()


def test_the_engine_finish_reads_typed_records_and_the_analysis_sees_failed_cells_errors(written):
    spec, results, rows, _ = written
    store = results.store
    seen: dict[str, object] = {}

    def aggregate(cells, metrics, seed):
        seen["rows"] = cells
        return analysis.aggregate_rows(cells, metrics, seed=seed)

    def publish(campaign, cells, aggregates, comparisons):
        seen["cells"] = cells
        return "# report"

    statuses: list[str] = []
    finish = engine.FinishSteps(
        replay_spool=lambda: None,
        stored=lambda: (store.cell_records(CID), store.summary_records(CID)),
        aggregate=aggregate,
        compare=lambda cells, metrics, base, tol, seed: analysis.comparison_rows(cells, metrics, base, tol, seed),
        persist_analysis=lambda aggs, cmps: (results.persist_aggregates(CID, aggs),
                                             results.persist_comparisons(CID, cmps)),
        publish=publish, persist_report=lambda markdown: None, set_status=statuses.append)
    result = engine.finish_campaign(spec, CID, finish)

    assert result.status == "failed" and statuses == ["failed"]  # two cells failed
    assert "b c1 rep 1: backend died during the cell" in result.message
    assert all(isinstance(c, CellRow) for c in seen["cells"])
    cells = seen["rows"]
    assert all(isinstance(r, CellResult) and isinstance(r.summary, CellSummary) for r in cells)
    by_id = {r.cell_id: r for r in cells}
    died = next(r for r in cells if r.backend_name == "b" and r.repetition == 1)
    assert died.error.startswith("backend died") and died.summary == CellSummary() and not died.valid
    assert sum(r.valid for r in by_id.values()) == 4
    aggs = store.aggregate_records(CID)
    assert aggs and all(isinstance(a, AggregateRow) for a in aggs)
    p99 = {a.backend_name: a for a in aggs if a.metric == "ttft_ms.p99"}
    assert p99["a"].n == 2 and p99["b"].n == 2
    cmps = store.comparison_records(CID)
    assert cmps and all(isinstance(c, ComparisonRow) for c in cmps)
    assert {c.tolerance for c in cmps} == {spec.compare.tolerance}


def test_analysis_input_joins_records_and_a_cell_without_summary_gets_an_empty_one():
    row = CellRow.model_validate(f.cell("c-0", status="failed", error="boom"))
    ok = CellRow.model_validate(f.cell("c-1", repetition=1, position=1))
    joined = analysis_input([row, ok], {"c-1": CellSummary.model_validate(f.summary())})
    assert [type(r) for r in joined] == [CellResult, CellResult]
    assert joined[0].summary == CellSummary() and joined[0].error == "boom" and not joined[0].valid
    assert joined[1].valid and joined[1].summary.value("ttft_ms.p99") == pytest.approx(100.0)
    # dicts with the same keys are accepted and give the same analysis
    as_dicts = [{**dict(r), "summary": r.summary.to_dict()} for r in joined]
    assert analysis.aggregate_rows(as_dicts, ["ttft_ms.p99"]) == analysis.aggregate_rows(joined, ["ttft_ms.p99"])
