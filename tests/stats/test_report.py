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
    # rounded to the digits the CI supports (the CI is about ±2.5 points): 30%, not 29.7%
    assert "At c4, **b** is better than **a** on p99 TTFT: 30% lower" in md
    assert md.splitlines()[2] == "**b is better than a at c4 (p99 TTFT -30%).**"  # the one-line answer
    assert "3 of 3 cells" not in md


# ---- numbers people can read (issue 15) ----------------------------------------------------------

@pytest.mark.parametrize(("mean", "low", "high", "expected"), [
    (5.88729004654206, 5.2, 6.6, ("5.9", "5.2–6.6")),          # half-width 0.7: one decimal
    (1234.5, 1100.0, 1370.0, ("1,230", "1,100–1,370")),       # half-width 135 (first digit 1): two figures
    (123456.7, 120000.0, 127000.0, ("123,000", "120,000–127,000")),
    (0.01234, 0.0101, 0.0148, ("0.012", "0.010–0.015")),
    (13.2, 3.1, 63.0, ("10", "3–63")),                         # a small bound keeps a figure, not "0"
    (5.88729004654206, None, None, ("5.89", "")),             # no interval: three significant figures
])
def test_numbers_are_rounded_to_the_digits_their_ci_supports(mean, low, high, expected):
    from benchflow.tables import format_estimate

    assert format_estimate(mean, low, high) == expected


def test_intervals_of_non_negative_quantities_are_truncated_at_zero():
    from benchflow.report_tables import aggregate_long, aggregate_wide
    from benchflow.tables import format_estimate

    assert format_estimate(3.0, -3.1, 9.8) == ("3", "0–9.8")
    assert format_estimate(-1.0, -3.0, 1.0, non_negative=False) == ("-1", "-3.0–1.0")
    row = {"backend_name": "a", "load_label": "c4", "metric": "ttft_ms.p99", "n": 2, "mean": 5.88729004654206,
           "ci_low": None, "ci_high": None, "t_low": -20.1, "t_high": 31.9}
    headers, rows = aggregate_wide([row])
    assert headers == ["load", "backend", "reps", "TTFT p99 (ms)"]
    assert rows == [["c4", "a", "2", "6 (0–32)"]]
    assert aggregate_long([row]) == [["c4", "a", "TTFT p99 (ms)", "2", "6", "0–32"]]


def test_changes_and_the_one_line_answer():
    from benchflow.report_tables import one_line_answer
    from benchflow.tables import format_change

    assert format_change(0.403, 0.30, 0.55) == "-60% (-70 to -45%)"
    assert format_change(0.428, 0.0344, 5.33) == "-60% (-97 to +430%)"  # asymmetric: the narrow side rounds
    assert format_change(13.2, 3.1, 63.0) == "10× (3–63×)"
    assert format_change(0.99, 0.979, 1.00092) == "-1.0% (-2.1 to +0.09%)"

    def cmp(load, metric, ratio, verdict):
        return {"candidate_ref": "mns48", "baseline_ref": "mns8", "load_label": load, "metric": metric,
                "ratio": ratio, "verdict": verdict}

    rows = [cmp("c16", "ttft_ms.p99", 0.4, "better"), cmp("c32", "ttft_ms.p99", 0.41, "better"),
            cmp("c16", "output_throughput", 1.42, "better"), cmp("c32", "output_throughput", 1.99, "better"),
            cmp("c4", "ttft_ms.p99", 1.0, "no significant difference")]
    assert one_line_answer(rows) == ("mns48 is better than mns8 at c16 and c32 (throughput +42 to +99%, "
                                     "p99 TTFT -60 to -59%); no difference at c4.")
    assert one_line_answer(rows[-1:]).startswith("No backend is clearly better")
    assert one_line_answer([]).startswith("No backend is clearly better")


def test_the_report_lists_engine_args_and_the_slo_and_units_in_headers():
    campaign = {"id": "x", "name": "n", "status": "completed",
                "spec": {"slo": {"ttft": {"p99": "500ms"}}, "backends": [
                    {"name": "mns8", "kind": "sim", "engine_args": {"max-num-seqs": 8}}]}}
    agg = [{"backend_name": "mns8", "load_label": "c4", "metric": m, "n": 3, "mean": v, "ci_low": lo, "ci_high": hi}
           for m, v, lo, hi in (("ttft_ms.p99", 5.88729004654206, 5.2, 6.6), ("output_throughput", 1234.5, 1100, 1370))]
    md = report.render_markdown(campaign, [], agg, [])
    assert "- backend mns8 (sim): engine args --max-num-seqs 8" in md and "- SLO: TTFT p99 ≤ 500ms" in md
    assert "| TTFT p99 (ms) |" in md.replace("  ", " ") or "TTFT p99 (ms)" in md
    assert "output throughput (tok/s)" in md and "5.9 (5.2–6.6)" in md and "1,230 (1,100–1,370)" in md
    assert "5.887" not in md
    text = report.render_text(campaign, [], agg, [])
    assert "5.9 (5.2–6.6)" in text and "truncated at 0" in text
