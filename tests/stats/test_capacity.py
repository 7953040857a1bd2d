"""SLO capacity search (benchflow.stats.capacity) against hand-made probes, and attainment_of."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchflow.errors import SpecError
from benchflow.records import records_to_frame
from benchflow.stats import summarize
from benchflow.stats.capacity import ProbeOutcome, attainment_of, search_capacity
from tests.stats.helpers import failed, incomplete, ok, run_of

ARGS = {"attainment": 0.9, "min_rate": 1.0, "max_rate": 100.0, "precision": 0.05}


def step_probe(capacity: float, calls: list | None = None):
    """Attainment 1 up to ``capacity``, 0 above it."""
    def probe(rate: float, rep: int) -> ProbeOutcome:
        if calls is not None:
            calls.append((rate, rep))
        return ProbeOutcome(1.0 if rate <= capacity else 0.5, 100, cell_id=f"c{len(calls or [])}")
    return probe


def test_brackets_geometrically_from_min_rate_then_bisects_within_precision():
    calls: list = []
    res = search_capacity(step_probe(13.0, calls), repetitions=1, **ARGS)
    assert [r for r, _ in calls[:6]] == [1.0, 2.0, 4.0, 8.0, 16.0] + [calls[5][0]]
    assert 8.0 < calls[5][0] < 16.0  # the first split lies inside the bracket
    assert res.status == "found"
    lo, hi = res.bracket
    assert lo <= 13.0 < hi and hi / lo - 1 <= ARGS["precision"]
    assert res.capacity_rps == pytest.approx(math.sqrt(lo * hi))
    assert abs(res.capacity_rps / 13.0 - 1) <= ARGS["precision"]
    assert res.ci_low is None and "no interval" in res.method
    assert len(res.probes) == len(calls) and all(p["repetition"] == 0 for p in res.probes)


@pytest.mark.parametrize("precision", [0.2, 0.05, 0.01])
def test_bisection_stops_once_the_bracket_is_within_precision(precision):
    res = search_capacity(step_probe(37.0), repetitions=1, **{**ARGS, "precision": precision})
    lo, hi = res.bracket
    assert lo <= 37.0 < hi and hi / lo - 1 <= precision
    # and not much later: the bracket before the last split was still too wide
    assert hi / lo - 1 > precision * 0.25


def test_probe_budget_ends_with_the_best_bracket_labelled_bracket_only():
    calls: list = []
    res = search_capacity(step_probe(13.0, calls), repetitions=1, max_probes=7, **ARGS)
    assert res.status == "bracket_only" and len(calls) == 7
    lo, hi = res.bracket
    assert lo <= 13.0 < hi and hi / lo - 1 > ARGS["precision"]
    assert res.capacity_rps is None and res.ci_low is None
    assert "probe budget (7)" in res.message


def test_should_stop_ends_the_search_with_its_bracket():
    calls: list = []
    res = search_capacity(step_probe(13.0, calls), repetitions=2, should_stop=lambda: len(calls) >= 10, **ARGS)
    assert res.status == "bracket_only" and len(calls) == 10
    assert {rep for _, rep in calls} == {0, 1}  # repetitions are interleaved, both got as far
    lo, hi = res.bracket
    assert lo <= 13.0 < hi
    assert "stopped" in res.message


def test_should_stop_before_any_probe_gives_no_bracket():
    res = search_capacity(step_probe(13.0), repetitions=3, should_stop=lambda: True, **ARGS)
    assert res.status == "bracket_only" and res.probes == [] and res.bracket is None


def test_below_min_and_above_max_say_so():
    low = search_capacity(step_probe(0.5), repetitions=3, **ARGS)
    assert low.status == "below_min" and low.capacity_rps is None
    assert "min_rate 1 req/s" in low.message and "below min_rate" in low.message
    assert [p["rate_rps"] for p in low.probes] == [1.0, 1.0, 1.0]
    high = search_capacity(step_probe(1000.0), repetitions=1, **ARGS)
    assert high.status == "above_max" and high.capacity_rps is None
    assert "above max_rate" in high.message
    assert high.probes[-1]["rate_rps"] == 100.0 and len(high.probes) == 8  # 1, 2, ..., 64, 100


def test_a_failed_or_saturated_probe_counts_as_missing_the_slo():
    def probe(rate, rep):
        if rate > 30:
            return ProbeOutcome(None, 0, cell_id="invalid")          # the cell failed
        if rate > 13:
            return ProbeOutcome(1.0, 50, cell_id="sat", saturated=True)  # stopped early, looked fine
        return ProbeOutcome(1.0, 100)
    res = search_capacity(probe, repetitions=1, **ARGS)
    lo, hi = res.bracket
    assert lo <= 13.0 < hi and res.status == "found"
    rec = {p["cell_id"]: p for p in res.probes}
    assert rec["sat"]["saturated"] and not rec["sat"]["met"]
    failing = search_capacity(lambda r, k: ProbeOutcome(None, 0), repetitions=1, **ARGS)
    assert failing.status == "below_min"


def test_a_probe_error_propagates():
    def probe(rate, rep):
        raise RuntimeError("backend crashed")
    with pytest.raises(RuntimeError, match="backend crashed"):
        search_capacity(probe, repetitions=1, **ARGS)
    with pytest.raises(TypeError, match="ProbeOutcome"):
        search_capacity(lambda r, k: 0.9, repetitions=1, **ARGS)


def noisy_probe(capacity: float, seed: int, sd: float = 0.1):
    """A noisy boundary: each repetition's cells cross the target at its own rate around
    ``capacity`` (lognormal, ``sd`` in log), like workload seeds."""
    rng = np.random.default_rng(seed)
    own = {}

    def probe(rate, rep):
        c = own.setdefault(rep, capacity * math.exp(rng.normal(0, sd)))
        return ProbeOutcome(0.99 if rate <= c else 0.5, 100)
    return probe


def test_repetitions_give_a_t_interval_that_covers_the_capacity():
    covered, runs = 0, 200
    for seed in range(runs):
        res = search_capacity(noisy_probe(20.0, seed), repetitions=3, seed=seed, **ARGS)
        assert res.status == "found" and res.ci_low < res.capacity_rps < res.ci_high
        covered += res.ci_low <= 20.0 <= res.ci_high
        assert "Student-t" in res.method and "3 repetitions" in res.method
    assert 0.9 <= covered / runs <= 1.0  # nominal 95 %


def test_the_same_seed_gives_the_same_search_and_another_seed_other_splits():
    a = search_capacity(step_probe(13.0), repetitions=3, seed=7, **ARGS)
    b = search_capacity(step_probe(13.0), repetitions=3, seed=7, **ARGS)
    c = search_capacity(step_probe(13.0), repetitions=3, seed=8, **ARGS)
    assert a.to_dict() == b.to_dict()
    assert [p["rate_rps"] for p in a.probes] != [p["rate_rps"] for p in c.probes]
    # repetitions split differently (dither), so their final brackets differ
    assert len({tuple(r["bracket"]) for r in a.repetitions}) == 3


def test_to_dict_is_json_ready_and_keeps_every_probe():
    res = search_capacity(step_probe(13.0), repetitions=3, **ARGS)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["status"] == "found" and len(d["probes"]) == len(res.probes)
    assert set(d["probes"][0]) >= {"rate_rps", "repetition", "attainment", "n_requests", "cell_id", "saturated"}
    assert d["bracket"] == list(res.bracket) and d["target_attainment"] == 0.9


def test_mixed_outcomes_count_censored_repetitions_at_the_limit():
    def probe(rate, rep):
        return ProbeOutcome(1.0 if (rep > 0 and rate <= 1.5) else 0.0, 10)
    res = search_capacity(probe, repetitions=3, **ARGS)
    assert res.status == "found" and "1 of 3 repetitions ended outside" in res.method


@pytest.mark.parametrize("bad", [{"attainment": 0}, {"min_rate": 0}, {"max_rate": 0.5}, {"precision": 0},
                                 {"repetitions": 0}, {"max_probes": 0},
                                 {"step": 1.0}, {"confidence": 1.0}])
def test_invalid_arguments_are_refused(bad):
    kwargs = {**ARGS, "repetitions": 1, **bad}
    with pytest.raises(SpecError):
        search_capacity(step_probe(10.0), **kwargs)


SLO = {"ttft": {"p99": 0.1}, "tpot": {"p99": 0.02}}


def test_attainment_of_uses_the_summary_s_per_request_check():
    records = [
        ok(0, 0, [5, 6], tokens=2, warmup=True),          # warm-up: left out
        ok(1, 0, [50, 60, 70], tokens=3),                 # meets
        ok(2, 0, [150, 160], tokens=2),                   # ttft 150 ms: misses
        ok(3, 0, [50, 100], tokens=2),                    # tpot 50 ms: misses
        ok(4, 0, [20], tokens=1),                         # one token: no tpot, meets
    ]
    run = run_of(records)
    assert attainment_of(records, SLO) == pytest.approx(0.5)
    assert attainment_of(records_to_frame(records), SLO) == pytest.approx(0.5)
    assert attainment_of(run, SLO) == summarize(run, slo=SLO)["slo_attainment"] == pytest.approx(0.5)


def test_attainment_of_counts_failures_and_known_late_incomplete_requests_as_misses():
    records = [
        ok(1, 0, [50, 60], tokens=2),                     # meets
        failed(2, 0, 30),                                 # failed: misses
        incomplete(3, 900, []),                           # no token 100 ms before the cell's end: misses
        incomplete(4, 980, []),                           # 20 ms in flight: unknown, left out
        incomplete(5, 800, [990]),                        # ttft 190 ms: misses
        ok(6, 0, [50, 1000], tokens=2),                   # the cell's latest known time (1000 ms); tpot misses
    ]
    assert attainment_of(records, SLO) == pytest.approx(1 / 5)
    assert attainment_of([incomplete(1, 0, [])], SLO) is None
    with pytest.raises(SpecError):
        attainment_of(records, {"ttft": {"p42": 1}})
