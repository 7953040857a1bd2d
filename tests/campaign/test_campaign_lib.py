"""Campaign bookkeeping, analysis and report wording (pure; no Prefect, no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from benchflow import analysis, report
from benchflow.campaign import (
    check_resume, failure_summary, new_campaign_id, spec_diff, validate_campaign_id,
)
from benchflow.errors import CampaignMismatchError


def test_campaign_ids_are_readable_sortable_and_valid():
    cid = new_campaign_id("My Nightly/Sweep!", now=datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    assert cid.startswith("my-nightly-sweep-20261122-020000-")
    assert validate_campaign_id(cid) == cid


@pytest.mark.parametrize("bad", ["../../x", "a/b", "UPPER", "", "-lead", "a" * 200])
def test_campaign_ids_that_could_escape_or_confuse_are_refused(bad):
    with pytest.raises(ValueError, match="invalid campaign id"):
        validate_campaign_id(bad)


def test_spec_diff_names_each_changed_path():
    old = {"backends": [{"name": "a", "engine_args": {"max-num-seqs": 8}}], "repetitions": 3}
    new = {"backends": [{"name": "a", "engine_args": {"max-num-seqs": 16}}], "repetitions": 3, "order": "grouped"}
    assert spec_diff(old, new) == ["backends[0].engine_args.max-num-seqs: 8 -> 16", "order: added ('grouped')"]


def test_resume_with_same_hash_passes_and_different_spec_is_refused():
    stored = {"spec_hash": "h1", "spec": {"repetitions": 3}}
    check_resume("c", stored, {"repetitions": 3}, "h1")
    check_resume("c", None, {"repetitions": 5}, "h2")
    with pytest.raises(CampaignMismatchError, match=r"repetitions: 3 -> 5"):
        check_resume("c", stored, {"repetitions": 5}, "h2")


def _row(backend, load, value, status="completed", invalid=None, cid=None):
    return {"cell_id": cid or f"{backend}-{load}-{value}", "backend_name": backend, "load_label": load,
            "status": status, "summary": {"ttft_ms": {"p99": value}, "output_throughput": 1000.0 / value,
                                          "invalid": invalid}}


def test_aggregates_use_completed_valid_cells_only():
    rows = [_row("a", "c4", v) for v in (100.0, 110.0, 120.0)]
    rows += [_row("a", "c4", 999.0, status="failed"), _row("a", "c4", 999.0, invalid="client lag")]
    aggs = {r["metric"]: r for r in analysis.aggregate_rows(rows, ["ttft_ms.p99"])}
    assert aggs["ttft_ms.p99"]["n"] == 3
    assert aggs["ttft_ms.p99"]["mean"] == pytest.approx(110.0)
    assert aggs["ttft_ms.p99"]["ci_low"] < 110.0 < aggs["ttft_ms.p99"]["ci_high"]


def test_comparison_verdicts_follow_metric_direction():
    rng = np.random.default_rng(0)
    rows = [_row("base", "c4", v) for v in rng.normal(100, 2, 5)]
    rows += [_row("fast", "c4", v) for v in rng.normal(70, 2, 5)]
    cmps = {r["metric"]: r for r in analysis.comparison_rows(rows, ["ttft_ms.p99", "output_throughput"], "base")}
    assert cmps["ttft_ms.p99"]["verdict"] == "better"  # lower latency
    assert cmps["output_throughput"]["verdict"] == "better"  # higher throughput
    assert cmps["ttft_ms.p99"]["ratio"] == pytest.approx(0.7, abs=0.05)


def test_report_says_in_plain_words_who_wins_by_how_much():
    row = {"candidate_ref": "fast", "baseline_ref": "base", "load_label": "c16", "metric": "ttft_ms.p99",
           "ratio": 0.75, "ci_low": 0.7, "ci_high": 0.8, "verdict": "better"}
    sentence = report.verdict_sentence(row)
    assert "At c16, **fast** is better than **base** on p99 TTFT: 25% lower" in sentence
    big = report.verdict_sentence({**row, "metric": "goodput", "ratio": 17.0, "ci_low": 16.9, "ci_high": 17.1})
    assert "on goodput: 17.00× as high" in big
    md = report.render_markdown({"id": "x", "name": "n", "status": "completed"},
                                [{"cell_id": "1", "backend_name": "fast", "load_label": "c16", "repetition": 0,
                                  "status": "failed", "error": "backend died"}], [], [row])
    assert "backend died" in md and "25% lower" in md


def test_failure_summary_lists_each_failed_cell_with_its_reason():
    cells = [{"backend_name": "a", "load_label": "c4", "repetition": 0, "status": "completed"},
             {"backend_name": "b", "load_label": "c4", "repetition": 1, "status": "failed",
              "error": "backend died during the cell (exit code 1)\nlog tail..."}]
    text = failure_summary(cells)
    assert text == "1 of 2 cells failed: b c4 rep 1: backend died during the cell (exit code 1)"
    assert failure_summary(cells[:1]) is None


def test_outcomes_the_store_has_no_status_for_are_stored_failed_with_their_own_status_leading():
    from typing import get_args

    from benchflow.campaign import stored_status
    from benchflow.store.rows import CellStatus

    for status in get_args(CellStatus):
        assert stored_status(status, "why") == (status, "why")
    assert stored_status("exploded", "no output token for 30s") == ("failed", "exploded: no output token for 30s")
    assert stored_status("exploded", "backend exploded: 4 in flight") == ("failed", "backend exploded: 4 in flight")
    assert stored_status("exploded", None) == ("failed", "exploded")
