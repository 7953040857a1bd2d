"""Issue 10.4: the aggregate/compare/regression tasks' cache keys cover the statistics code, so a
fix to the statistics is never answered with numbers the old code computed."""

from __future__ import annotations

import pytest

from benchflow import analysis
from benchflow.stats import fingerprint

ROWS = [{"cell_id": f"c{i}", "backend_name": "a", "load_label": "c4", "status": "completed",
         "summary": {"output_throughput": v}} for i, v in enumerate((100.0, 110.0, 105.0))]


@pytest.fixture
def harness(prefect_harness):
    """The session's one Prefect harness (two harnesses side by side break Prefect's event workers)."""
    yield


def test_the_code_hash_changes_with_any_statistics_source(tmp_path):
    a, b = tmp_path / "inference.py", tmp_path / "compare.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = fingerprint.code_hash([a, b])
    a.write_text("x = 2\n")
    assert fingerprint.code_hash([a, b]) != before
    names = {p.name for p in fingerprint.statistics_sources()}
    assert {"inference.py", "compare.py", "analysis.py", "regression.py"} <= names
    from benchflow import __version__
    assert fingerprint.code_hash().startswith(f"{__version__}-")


def test_the_statistics_tasks_key_on_the_code_hash():
    from tasks.analysis import aggregate, compare
    from tasks.cache import StatisticsCode
    from tasks.regression import check_regressions

    for t in (aggregate, compare, check_regressions):
        assert any(isinstance(p, StatisticsCode) for p in t.cache_policy.policies), t.name


def test_a_changed_statistics_code_path_gives_new_numbers_not_cached_ones(harness, monkeypatch):
    from prefect import flow

    from tasks.analysis import aggregate

    @flow
    def run_aggregate() -> float:
        return aggregate(ROWS, ["output_throughput"], 0)[0]["mean"]

    assert run_aggregate() == pytest.approx(105.0)
    # the statistics change (here: the mean is doubled) but its code hash is the same: the cache answers
    original = analysis.aggregate_rows
    monkeypatch.setattr(analysis, "aggregate_rows",
                        lambda *a, **k: [{**r, "mean": r["mean"] * 2} for r in original(*a, **k)])
    assert run_aggregate() == pytest.approx(105.0), "same code hash: the cached result"
    # ... as it does in real life, the code hash follows the source: new numbers
    monkeypatch.setattr(fingerprint, "code_hash", lambda paths=None: "0.1.0-changed")
    assert run_aggregate() == pytest.approx(210.0)
