"""The comparison's false verdicts and the nightly check's false alarms, measured on A/A runs of the
virtual-time simulator (issue 10, "Honest comparisons"): at least 200 seeded pairs at n = 2, 3, 5, 10.

The pool of simulated repetitions is made once per test session and shared with
tests/deploy/test_regression.py (``calibration.cached_pool``: 1-5 minutes on a 2-core machine).
"""

from __future__ import annotations

import pytest

from benchflow.stats import calibration as cal

PAIRS = 200
NS = (2, 3, 5, 10)
#: The pool is made inside the first test that needs it: minutes on a busy 2-core machine.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="session")
def pool() -> list[dict]:
    return list(cal.cached_pool(2 * max(NS) * PAIRS))


def test_a_slower_engine_is_the_same_run_scaled():
    """Power uses slowed(): in a closed loop a 5% dearer step is exactly a 5% slower run."""
    base = cal.simulated_repetition(7)
    dearer = cal.simulated_repetition(7, time_scale=1.05)
    expected = cal.slowed(base, 1.05)
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        for stat in ("p50", "p99"):
            assert dearer[key][stat] == pytest.approx(expected[key][stat], rel=1e-9)
    assert dearer["output_throughput"] == pytest.approx(expected["output_throughput"], rel=1e-9)


def test_the_simulated_repetitions_vary_like_real_ones(pool):
    cv = cal.spread(pool[:400])
    assert all(0.005 < v < 0.2 for v in cv.values()), cv


@pytest.mark.parametrize("n", NS)
def test_identical_backends_get_a_false_verdict_for_at_most_5_percent_of_pairs_per_metric(pool, n):
    rates = cal.verdict_rates(pool, n, PAIRS, tolerance=0.0)
    assert rates.pairs >= 200
    assert max(rates.per_metric.values()) <= 0.05, rates.per_metric


def test_a_real_10_percent_slowdown_is_found_at_10_repetitions(pool):
    rates = cal.verdict_rates(pool, 10, PAIRS, slowdown=0.10, metrics=["tpot_ms.p50", "output_throughput"])
    assert min(rates.per_metric.values()) >= 0.8, rates.per_metric
