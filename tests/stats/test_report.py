"""The report when backends fail (issue 10.8, issue 11.8): failed and invalid backends first, right
counts, invalid cells listed with their reason, and every undecided comparison with its reason,
in the database and in the report."""

from __future__ import annotations

import pytest

from benchflow import analysis, report
from benchflow.store.db import ResultStore

CRASH = "backend died during the cell (exit code 1)\nsimulated crash (--crash-after 30)"
OVERLONG = "error rate 100.0% exceeds the limit 5.0%; dominant error: http_400: prompt is longer than max-model-len 2048"


def _cell(backend: str, load: str, rep: int, status: str = "completed", *, error: str | None = None,
          invalid: str | None = None, value: float = 100.0) -> dict:
    return {"cell_id": f"{backend}-{load}-{rep}", "backend_name": backend, "load_label": load, "repetition": rep,
            "status": status, "error": error, "invalid_reason": invalid,
            "summary": {"ttft_ms": {"p99": value}, "output_throughput": 1000.0 / value, "invalid": invalid}}


def faulty_cells() -> list[dict]:
    """One healthy backend, one that crashed (3 failed cells whose summaries are also invalid), and
    one with 6 of 6 cells invalid."""
    cells = [_cell("good", "c4", r, value=100.0 + r) for r in range(3)]
    cells += [_cell("crashy", "c4", r, "failed", error=CRASH, invalid="no measured request completed or failed")
              for r in range(3)]
    cells += [_cell("overlong", load, r, invalid=OVERLONG) for load in ("c4", "c8") for r in range(3)]
    cells += [_cell("good", "c8", r, value=90.0 + r) for r in range(3)]
    return cells


def _analysis_rows(cells: list[dict]) -> list[dict]:
    return [{k: c[k] for k in ("cell_id", "backend_name", "load_label", "status", "summary")} for c in cells]


@pytest.fixture
def store(tmp_path) -> ResultStore:
    s = ResultStore(f"sqlite:///{tmp_path / 'r.db'}")
    s.upgrade()
    s.upsert_campaign("camp", name="faulty", spec={"name": "faulty"}, spec_hash="h")
    return s


def test_a_faulty_campaign_names_failed_and_invalid_backends_first(store):
    cells = faulty_cells()
    metrics = ["ttft_ms.p99", "output_throughput"]
    comparisons = analysis.comparison_rows(_analysis_rows(cells), metrics, "good")
    store.upsert_comparisons("camp", comparisons)
    stored = store.comparisons("camp")
    assert stored and all(r["verdict"] == "insufficient data" for r in stored)
    crashy = next(r for r in stored if r["candidate_ref"] == "crashy")
    assert crashy["reason"] == "no valid cells of crashy at c4 (3 failed)"  # analysis input rows carry no error
    overlong = next(r for r in stored if r["candidate_ref"] == "overlong")
    assert "no valid cells of overlong at c4 (3 invalid): error rate 100.0%" in overlong["reason"]

    md = report.render_markdown({"id": "camp", "name": "faulty", "status": "failed"}, cells, [], stored)
    assert "No significant difference between the backends" not in md
    assert "Nothing to compare (one backend" not in md
    assert "12 of 15 cells completed (6 valid, 6 marked invalid), 3 failed, 0 skipped" in md
    words = md.split("## In plain words", 1)[1].split("##", 1)[0].strip().splitlines()
    assert words[0] == ("- **crashy** failed: 3 of 3 cells failed: backend died during the cell (exit code 1) — "
                        "simulated crash (--crash-after 30).")
    assert words[1].startswith("- **overlong** is invalid: 6 of 6 cells marked invalid and left out of the "
                               "comparison: error rate 100.0% exceeds the limit 5.0%; dominant error: http_400")
    assert any("crashy vs good" in w and "insufficient data: no valid cells of crashy" in w for w in words)
    assert "## Invalid cells" in md and md.count("max-model-len 2048") >= 6
    assert "no valid cells of overlong at c8 (3 invalid)" in md.split("## Comparisons", 1)[1]

    text = report.render_text({"id": "camp", "name": "faulty", "status": "failed"}, cells, [], stored)
    assert "12/15 cells completed, 3 failed, 6 invalid" in text  # was "3 failed, 9 invalid"
    assert text.count("! invalid overlong") == 6 and "prompt is longer than max-model-len" in text
    assert "crashy failed: 3 of 3 cells failed" in text


def test_two_backends_with_only_invalid_cells_name_the_cause_not_a_lack_of_repetitions():
    cells = [_cell(b, "c4", r, invalid=OVERLONG) for b in ("a", "b") for r in range(3)]
    comparisons = analysis.comparison_rows(_analysis_rows(cells), ["ttft_ms.p99"], "a")
    md = report.render_markdown({"id": "x", "name": "n", "status": "completed"}, cells, [], comparisons)
    assert "fewer than 3 usable repetitions" not in md
    assert "**a** is invalid: 3 of 3 cells" in md and "prompt is longer than max-model-len 2048" in md
    assert [c["verdict"] for c in comparisons] == ["insufficient data"]
    assert "no valid cells of a at c4 (3 invalid)" in comparisons[0]["reason"]


def test_with_no_comparisons_at_all_the_report_says_why():
    cells = [_cell("only", "c4", r) for r in range(3)]
    md = report.render_markdown({"id": "x", "name": "n", "status": "completed"}, cells, [], [])
    assert "Nothing to compare: the campaign has one backend." in md
    cells += [_cell("dead", "c4", r, "failed", error="backend never became ready") for r in range(3)]
    md = report.render_markdown({"id": "x", "name": "n", "status": "failed"}, cells, [], [])
    assert "Nothing to compare: only **only** has valid cells." in md


def test_a_not_enough_repetitions_comparison_carries_its_reason_into_the_report():
    cells = [_cell("a", "c4", 0), _cell("b", "c4", 0, value=120.0), _cell("b", "c4", 1, value=121.0)]
    comparisons = analysis.comparison_rows(_analysis_rows(cells), ["ttft_ms.p99"], "a")
    assert comparisons[0]["verdict"] == "not enough repetitions"
    assert comparisons[0]["reason"].startswith("1 baseline and 2 candidate repetitions; need")
    md = report.render_markdown({"id": "x", "name": "n", "status": "completed"}, cells, [], comparisons)
    assert "not enough repetitions: 1 baseline and 2 candidate repetitions; need" in md


def test_a_healthy_comparison_still_reads_as_before():
    cells = [_cell("a", "c4", r, value=100.0 + r) for r in range(3)]
    cells += [_cell("b", "c4", r, value=70.0 + r) for r in range(3)]
    comparisons = analysis.comparison_rows(_analysis_rows(cells), ["ttft_ms.p99"], "a")
    md = report.render_markdown({"id": "x", "name": "n", "status": "completed"}, cells, [], comparisons)
    assert "At c4, **b** is better than **a** on p99 TTFT: 29.7% lower" in md
    assert "3 of 3 cells" not in md
