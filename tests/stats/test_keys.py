"""Reading compare metrics out of a summary, and which direction is better."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.errors import SpecError
from benchflow.stats import distribution_ms, higher_is_better, is_metric_key, metric_value, summarize
from tests.stats.helpers import failed, ok, run_of


def test_metric_value_reads_nested_and_scalar_keys():
    s = summarize(run_of([ok(1, 0, [100, 150], tokens=2, end_ms=1000), failed(2, 0, 50, "timeout", None)]))
    assert metric_value(s, "ttft_ms.p99") == pytest.approx(100.0)
    assert metric_value(s, "output_throughput") == pytest.approx(2.0)
    assert metric_value(s, "completed") == 1.0
    assert metric_value(s, "errors.timeout") == 1.0
    assert metric_value(s, "errors.http_5xx") == 0.0
    assert metric_value(s, "tpot_ms.p99") == pytest.approx(50.0)
    assert metric_value(s, "goodput") is None  # no SLO
    assert metric_value(s, "nonsense.p99") is None


def test_direction_of_metrics():
    for key in ("output_throughput", "request_throughput", "total_throughput", "goodput", "slo_attainment",
                "completed"):
        assert higher_is_better(key), key
    for key in ("ttft_ms.p99", "itl_ms.mean", "e2e_ms.p50", "error_rate", "tpot_ms.p90"):
        assert not higher_is_better(key), key
    with pytest.raises(SpecError):
        higher_is_better("ttft.p99")
    assert not is_metric_key("ttft_ms.p42")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=200))
def test_distribution_percentiles_are_ordered(values_ns):
    d = distribution_ms(values_ns)
    eps = 1e-9 * max(1.0, d["max"])
    assert d["min"] - eps <= d["p50"] <= d["p90"] + eps
    assert d["p90"] <= d["p95"] + eps and d["p95"] <= d["p99"] + eps and d["p99"] <= d["max"] + eps
    assert d["min"] - eps <= d["mean"] <= d["max"] + eps
    assert d["count"] == len(values_ns)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.lists(st.integers(1, 5_000), min_size=1, max_size=8),
                          st.one_of(st.none(), st.integers(1, 50))), min_size=1, max_size=20))
def test_summary_latencies_are_ordered_and_nonnegative(specs):
    records = []
    for i, (start, gaps, tokens) in enumerate(specs):
        times, t = [], start
        for g in gaps:
            t += g
            times.append(t)
        records.append(ok(i, start, times, tokens=tokens))
    s = summarize(run_of(records))
    assert s["completed"] == len(specs) and s["error_rate"] == 0.0
    for name in ("ttft_ms", "e2e_ms", "itl_ms", "tpot_ms", "ntpot_ms"):
        d = s[name]
        if d["count"]:
            assert 0 <= d["min"] <= d["p50"] <= d["p99"] <= d["max"]
    assert s["ttft_ms"]["max"] <= s["e2e_ms"]["max"]
