"""The per-cell summary: window, throughput, errors, goodput/SLO and validity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchflow.stats import DIST_KEYS, measurement_window, summarize
from tests.stats.helpers import MS, failed, incomplete, ok, run_of


def _basic_run():
    return run_of([
        ok(0, 0, [5, 6], tokens=2, warmup=True, end_ms=7),          # warm-up: ignored
        ok(1, 100, [150, 160, 170], tokens=3, input_tokens=20, end_ms=175),
        ok(2, 200, [300, 320], tokens=2, input_tokens=30, end_ms=330),
        failed(3, 250, 1100, error_class="timeout", status=None),  # its end widens the window
        incomplete(4, 300, [400, 500]),
    ])


def test_window_runs_from_first_measured_send_to_last_measured_end():
    run = _basic_run()
    assert measurement_window(run) == (100 * MS, 1100 * MS)
    assert summarize(run)["duration_s"] == pytest.approx(1.0)


def test_incomplete_request_ends_at_its_last_known_time():
    run = run_of([ok(1, 0, [10], tokens=1, end_ms=20), incomplete(2, 5, [50, 900])])
    assert measurement_window(run) == (0, 900 * MS)


def test_throughputs_count_tokens_served_inside_the_window():
    s = summarize(_basic_run())
    assert s["request_throughput"] == pytest.approx(2.0)
    # 5 tokens of the successful requests + the 2 messages the cut-off request had received
    # (1 token per message, as in the cell's successful requests); its 10 input tokens count too
    assert s["incomplete_output_tokens"] == pytest.approx(2.0)
    assert s["output_throughput"] == pytest.approx(7.0)
    assert s["total_throughput"] == pytest.approx(67.0)
    assert s["total_input_tokens"] == 50 and s["total_output_tokens"] == 5


def test_counts_errors_and_error_rate_exclude_incomplete_and_warmup():
    s = summarize(_basic_run())
    assert (s["completed"], s["failed"], s["incomplete"]) == (2, 1, 1)
    assert s["errors"] == {"timeout": 1}
    assert s["error_rate"] == pytest.approx(1 / 3)


def test_latency_blocks_use_successful_measured_requests_in_ms():
    s = summarize(_basic_run())
    assert s["ttft_ms"]["count"] == 2
    assert s["ttft_ms"]["min"] == pytest.approx(50.0) and s["ttft_ms"]["max"] == pytest.approx(100.0)
    assert s["e2e_ms"]["mean"] == pytest.approx((70 + 120) / 2)
    assert s["itl_ms"]["count"] == 3  # 2 gaps + 1 gap, pooled
    assert s["tpot_ms"]["p50"] == pytest.approx(np.percentile([10.0, 20.0], 50))
    assert set(s["ttft_ms"]) == set(DIST_KEYS)


def test_percentiles_use_numpy_linear_interpolation():
    ttfts = [10, 20, 30, 40, 1000]
    run = run_of([ok(i, 0, [t], tokens=1) for i, t in enumerate(ttfts)])
    block = summarize(run)["ttft_ms"]
    for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert block[key] == pytest.approx(np.percentile(ttfts, q))


def test_no_data_gives_none_not_zero():
    s = summarize(run_of([ok(1, 0, [10], tokens=1)]))
    assert s["tpot_ms"] == {**{k: None for k in DIST_KEYS if k != "count"}, "count": 0}
    assert s["itl_ms"]["p99"] is None
    empty = summarize(run_of([]))
    assert empty["request_throughput"] is None and empty["duration_s"] is None
    assert empty["error_rate"] is None and empty["invalid"]


def test_missing_usage_flags_tokens_estimated():
    with_usage = summarize(run_of([ok(1, 0, [10, 20], tokens=2)]))
    without = summarize(run_of([ok(1, 0, [10, 20], tokens=2), ok(2, 0, [10, 20, 30], tokens=None)]))
    assert with_usage["tokens_estimated"] is False
    assert without["tokens_estimated"] is True
    assert without["total_output_tokens"] == 5


def test_summary_is_json_ready():
    s = summarize(_basic_run(), slo={"ttft": {"p99": 0.5}})
    assert json.loads(json.dumps(s, allow_nan=False)) == s
    for key in ("schema_version", "goodput", "slo_attainment", "invalid", "mode", "concurrency",
                "target_rate", "achieved_rate", "client_lag_ms", "ntpot_ms", "slo_met", "slo_violations"):
        assert key in s


def _slo_run():
    # ttft 100, 200, 300, 400 ms; request 4 has a 1-token answer (no tpot)
    return run_of([
        ok(1, 0, [100, 110, 120], tokens=3),
        ok(2, 0, [200, 300, 400], tokens=3),  # tpot 100 ms: misses a 50 ms tpot SLO
        ok(3, 0, [300, 310], tokens=2),
        ok(4, 0, [400], tokens=1),
    ])


def test_goodput_counts_requests_meeting_every_slo():
    s = summarize(_slo_run(), slo={"ttft": {"p99": 0.35}, "tpot": {"p90": 0.05}})
    # request 1 ok; 2 misses tpot; 3 ok; 4 misses ttft (no tpot passes that objective)
    assert s["slo_attainment"] == pytest.approx(0.5)
    assert s["goodput"] == pytest.approx(2 / 0.401)
    assert s["request_throughput"] == pytest.approx(4 / 0.401)


def test_one_token_request_passes_the_tpot_slo():
    s = summarize(run_of([ok(1, 0, [100], tokens=1)]), slo={"tpot": {"p99": 0.001}})
    assert s["slo_attainment"] == 1.0 and s["slo_met"] is True


def test_itl_slo_uses_each_requests_own_itl_percentile():
    fast = ok(1, 0, [10, 20, 30, 40], tokens=4)             # gaps 10, 10, 10
    spiky = ok(2, 0, [10, 20, 30, 130], tokens=4)           # gaps 10, 10, 100: own p99 ~98 ms
    s = summarize(run_of([fast, spiky]), slo={"itl": {"p99": 0.05}})
    assert s["slo_attainment"] == pytest.approx(0.5)
    s_mean = summarize(run_of([fast, spiky]), slo={"itl": {"mean": 0.05}})  # spiky mean = 40 ms
    assert s_mean["slo_attainment"] == 1.0


def test_cell_slo_verdict_uses_the_cell_percentile():
    s = summarize(_slo_run(), slo={"ttft": {"p50": 0.3, "p99": 0.35}})
    assert s["slo_met"] is False
    assert len(s["slo_violations"]) == 1 and s["slo_violations"][0].startswith("ttft p99 ")
    ok_cell = summarize(_slo_run(), slo={"ttft": {"p99": 0.5}})
    assert ok_cell["slo_met"] is True and ok_cell["slo_violations"] == []


def test_without_slo_goodput_and_attainment_are_none():
    s = summarize(_slo_run())
    assert s["goodput"] is None and s["slo_attainment"] is None and s["slo_met"] is None


def test_unknown_slo_metric_is_a_spec_error_listing_every_problem():
    from benchflow.errors import SpecError
    with pytest.raises(SpecError) as e:
        summarize(_slo_run(), slo={"latency": {"p99": 1.0}, "ttft": {"p42": 1.0}})
    assert len(e.value.problems) == 2


def _open_run(n: int, interval_ms: float, lag_ms: float = 0.0, target: float = 10.0):
    recs = [ok(i, i * interval_ms + lag_ms, [i * interval_ms + lag_ms + 20], tokens=1, scheduled_ms=i * interval_ms)
            for i in range(n)]
    return run_of(recs, mode="open", concurrency=None, target_rate=target)


def test_open_loop_achieved_rate_and_valid_cell():
    s = summarize(_open_run(21, 100.0))
    assert s["achieved_rate"] == pytest.approx(10.0)
    assert s["client_lag_ms"]["p99"] == pytest.approx(0.0)
    assert s["invalid"] is None


def test_invalid_when_achieved_rate_below_95_percent_of_target():
    s = summarize(_open_run(21, 125.0))  # 8 req/s against a 10 req/s target
    assert s["invalid"] is not None and "rate" in s["invalid"]
    assert summarize(_open_run(21, 125.0), limits={"min_rate_fraction": 0.5})["invalid"] is None


def test_invalid_when_client_lag_p99_exceeds_limit_and_reasons_join():
    recs = _open_run(21, 100.0).records
    recs += [failed(100 + i, 1000 + i, 1100 + i, scheduled_ms=1000 + i - 200) for i in range(3)]
    run = run_of(recs, mode="open", concurrency=None, target_rate=10.0)
    s = summarize(run)
    assert "client lag p99" in s["invalid"] and "error rate" in s["invalid"]
    assert "; " in s["invalid"]


def test_limits_accept_an_object_with_attributes():
    class Limits:
        max_error_rate = 0.5
        client_lag_p99_s = 1.0
        min_rate_fraction = 0.95

    recs = [ok(1, 0, [10], tokens=1), failed(2, 0, 10)]
    assert "error rate 50.0%" in summarize(run_of(recs))["invalid"]
    assert summarize(run_of(recs), limits=Limits())["invalid"] is None


def test_closed_loop_is_not_judged_on_rate():
    s = summarize(run_of([ok(i, i * 1000, [i * 1000 + 10], tokens=1) for i in range(5)], concurrency=1))
    assert s["mode"] == "closed" and s["concurrency"] == 1 and s["invalid"] is None


def test_input_tokens_fallback():
    recs = [ok(1, 0, [500], tokens=5, input_tokens=None, end_ms=1000), ok(2, 0, [500], tokens=5, input_tokens=20)]
    assert summarize(run_of(recs))["total_throughput"] == pytest.approx(30.0)
    strict = summarize(run_of(recs), input_tokens_fallback=False)
    assert strict["total_throughput"] is None and strict["output_throughput"] == pytest.approx(10.0)
