"""Regression detection (benchflow.regression): verdicts, the false-alarm rate on A/A runs of the
virtual-time simulator, baselines, rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from benchflow import regression
from benchflow.stats import calibration as cal
from benchflow.store.db import ResultStore

METRICS = ["tpot_ms.p50", "e2e_ms.p50", "output_throughput"]


def summary(values: dict[str, float]) -> dict:
    out: dict = {}
    for key, value in values.items():
        dist, _, stat = key.partition(".")
        if stat:
            out.setdefault(dist, {})[stat] = value
        else:
            out[key] = value
    return out


def rows_for(per_rep: list[dict[str, float]], backend: str = "a", load: str = "c4", status: str = "completed") -> list:
    return [{"cell_id": f"{backend}{load}{i}", "backend_name": backend, "load_label": load, "status": status,
             "summary": summary(v)} for i, v in enumerate(per_rep)]


#: The nightly's false alarms and power are measured on A/A runs of the virtual-time simulator
#: (benchflow.stats.calibration), not on an invented noise model.
PAIRS, NS = 200, (2, 3, 5, 10)
pytestmark = pytest.mark.timeout(1800)  # the shared pool of simulated repetitions is made once per session


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    return list(cal.cached_pool(2 * max(NS) * PAIRS))


def sim_reps(first_seed: int, n: int, time_scale: float = 1.0) -> list[dict]:
    """n simulated repetitions; ``time_scale`` 1.15 is an engine whose every step costs 15% more."""
    return [cal.simulated_repetition(first_seed + i, time_scale=time_scale) for i in range(n)]


def test_a_planted_15_percent_slowdown_is_a_regression_in_every_metric():
    report = regression.detect(rows_for(sim_reps(0, 5)), rows_for(sim_reps(100, 5, time_scale=1.15)),
                               metrics=METRICS, tolerance=0.05, campaign_id="night-2", baseline_campaign_id="night-1")
    assert {f.metric for f in report.regressions} == set(METRICS)
    tpot = next(f for f in report.regressions if f.metric == "tpot_ms.p50")
    assert tpot.ratio == pytest.approx(1.15, abs=0.03) and tpot.ci_low > 1.05
    throughput = next(f for f in report.regressions if f.metric == "output_throughput")
    assert throughput.ratio < 0.95 and throughput.ci_high < 0.95  # lower throughput is the regression
    assert "3 regression(s) against baseline night-1" in report.message()
    assert "tpot_ms.p50 +1" in report.message()


def test_a_speedup_is_an_improvement_not_a_regression():
    report = regression.detect(rows_for(sim_reps(0, 5)), rows_for(sim_reps(100, 5, time_scale=0.8)), metrics=METRICS)
    assert not report.regressions
    assert {f.metric for f in report.improvements} == set(METRICS)
    assert report.message().startswith("no regressions")


@pytest.mark.parametrize("n", NS)
def test_an_unchanged_engine_is_flagged_in_at_most_5_percent_of_nightly_runs(pool, n):
    """A/A: 200 pairs of disjoint simulated repetitions; a run counts as flagged when ANY of the
    campaign's default metrics is called a regression (tolerance 5%, the spec's default)."""
    rates = cal.regression_rates(pool, n, PAIRS, tolerance=0.05)
    assert rates.pairs >= 200
    assert rates.any <= 0.05, rates.per_metric


def test_a_15_percent_slowdown_is_flagged_in_at_least_95_percent_of_nightly_runs_at_5_repetitions(pool):
    rates = cal.regression_rates(pool, 5, PAIRS, tolerance=0.05, slowdown=0.15)
    assert rates.any >= 0.95, rates.per_metric


def test_per_metric_tolerance_wins_over_the_common_one():
    base = [{"ttft_ms.p99": v} for v in (100.0, 101.0, 99.0)]
    cand = [{"ttft_ms.p99": v} for v in (110.0, 111.0, 109.0)]  # +10%
    strict = regression.detect(rows_for(base), rows_for(cand), metrics=["ttft_ms.p99"], tolerance=0.05)
    loose = regression.detect(rows_for(base), rows_for(cand), metrics=["ttft_ms.p99"], tolerance=0.05,
                              tolerances={"ttft_ms.p99": 0.2})
    assert [f.verdict for f in strict.findings] == ["regression"]
    assert [f.verdict for f in loose.findings] == ["no change"]
    assert loose.findings[0].tolerance == 0.2


def test_failed_or_invalid_cells_do_not_count_and_missing_data_is_reported():
    base = rows_for([{"tpot_ms.p50": 8.0}] * 3)
    failed = rows_for([{"tpot_ms.p50": 80.0}] * 3, status="failed")
    report = regression.detect(base, failed, metrics=["tpot_ms.p50"])
    assert [f.verdict for f in report.findings] == ["insufficient data"]
    assert report.findings[0].note == "no valid cells of a at c4 (3 failed)"
    one = regression.detect(base, rows_for([{"tpot_ms.p50": 80.0}]), metrics=["tpot_ms.p50"])
    assert [f.verdict for f in one.findings] == ["not enough repetitions"]  # 1 repetition: no interval
    assert one.findings[0].note.startswith("3 baseline and 1 candidate repetitions; need")
    assert one.insufficient == one.findings


def test_keys_only_this_run_has_are_skipped_and_backends_are_matched_by_name():
    base = rows_for([{"tpot_ms.p50": 8.0 + i * 0.01} for i in range(3)], backend="a")
    cand = (rows_for([{"tpot_ms.p50": 8.0 + i * 0.01} for i in range(3)], backend="a")
            + rows_for([{"tpot_ms.p50": 9.0}] * 3, backend="new"))
    report = regression.detect(base, cand, metrics=["tpot_ms.p50"])
    assert [(f.backend, f.verdict) for f in report.findings] == [("a", "no change")]


def test_rows_are_comparisons_of_kind_regression_and_the_markdown_lists_every_group(tmp_path):
    report = regression.detect(rows_for(sim_reps(0, 5)), rows_for(sim_reps(100, 5, time_scale=1.15)),
                               metrics=METRICS, campaign_id="night-2", baseline_campaign_id="night-1")
    store = ResultStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.upgrade()
    for cid in ("night-1", "night-2"):
        store.upsert_campaign(cid, name="nightly-x", spec={"name": "nightly-x"}, spec_hash="h", kind="nightly")
    store.upsert_comparisons("night-2", report.rows())
    store.upsert_comparisons("night-2", report.rows())  # idempotent
    stored = store.comparisons("night-2")
    assert len(stored) == 3
    assert {(r["kind"], r["baseline_campaign_id"], r["verdict"]) for r in stored} == {
        ("regression", "night-1", "regression")}
    markdown = report.to_markdown("Nightly")
    for heading in ("## Regressions (3)", "## Improvements (0)", "## No change (0)"):
        assert heading in markdown
    assert "tpot_ms.p50" in markdown


def _campaign(store: ResultStore, cid: str, *, status: str, kind: str = "nightly", created: datetime,
              name: str = "nightly-x") -> None:
    store.upsert_campaign(cid, name=name, spec={"name": name}, spec_hash="h", kind=kind, created_at=created,
                          status=status, finished_at=created + timedelta(minutes=5) if status != "running" else None)


def test_the_baseline_is_the_pinned_campaign_else_the_last_completed_nightly_before_this_one(tmp_path):
    store = ResultStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.upgrade()
    t0 = datetime(2026, 1, 1, 2, tzinfo=UTC)
    _campaign(store, "n1", status="completed", created=t0)
    _campaign(store, "n2", status="failed", created=t0 + timedelta(days=1))
    _campaign(store, "adhoc", status="completed", kind="campaign", created=t0 + timedelta(days=1, hours=1))
    _campaign(store, "n3", status="running", created=t0 + timedelta(days=2))
    _campaign(store, "n4", status="completed", created=t0 + timedelta(days=3))  # a later run: never a baseline of n3
    before = store.get_campaign("n3")["created_at"]
    assert regression.find_baseline(store, "nightly-x", "n3", before=before)["id"] == "n1"
    store.pin_baseline("adhoc")
    assert regression.find_baseline(store, "nightly-x", "n3", before=before)["id"] == "adhoc"
    assert regression.find_baseline(store, "nightly-x", "n3", policy="previous", before=before)["id"] == "n1"
    assert regression.find_baseline(store, "nightly-x", "n3", explicit_id="n2")["id"] == "n2"
    with pytest.raises(regression.BaselineNotFoundError):
        regression.find_baseline(store, "nightly-x", "n3", explicit_id="nope")
    assert regression.find_baseline(store, "other-name", "n3") is None
    store.pin_baseline("adhoc", False)
    assert regression.find_baseline(store, "nightly-x", "n3", policy="pinned") is None


def test_settings_come_from_the_regression_section_with_fallbacks():
    from benchflow.spec import load_spec

    base = {"name": "x", "allow_simulated": True, "model": "m",
            "backends": [{"name": "a", "kind": "sim"}],
            "workload": {"dataset": "D(8,8)", "load_points": [{"concurrency": 1}], "max_requests": 4},
            "compare": {"metrics": ["ttft_ms.p99", "output_throughput"]}}
    assert regression.regression_settings(load_spec(base)) == {
        "metrics": ["ttft_ms.p99", "output_throughput"], "tolerance": 0.05, "tolerances": {}, "policy": "auto"}
    spec = load_spec({**base, "regression": {"tolerance": 0.1, "tolerances": {"ttft_ms.p99": 0.2},
                                             "baseline": "pinned", "metrics": ["ttft_ms.p99"]}})
    assert regression.regression_settings(spec) == {
        "metrics": ["ttft_ms.p99"], "tolerance": 0.1, "tolerances": {"ttft_ms.p99": 0.2}, "policy": "pinned"}
