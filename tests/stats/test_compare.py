"""benchflow.stats.compare: the Welch log-ratio interval, its verdicts and "not enough repetitions"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchflow.stats import compare, repetitions_needed
from benchflow.stats.compare import CONFIDENCE, METHOD, welch_log_ratio


def test_the_interval_is_the_delta_method_welch_interval_of_the_log_ratio():
    from scipy import stats as sps

    b, c = np.array([100.0, 104.0, 98.0]), np.array([110.0, 108.0, 115.0])
    low, high, df = welch_log_ratio(b, c, 0.95)
    vb, vc = np.var(b, ddof=1) / b.mean() ** 2 / 3, np.var(c, ddof=1) / c.mean() ** 2 / 3
    se = math.sqrt(vb + vc)
    assert df == pytest.approx((vb + vc) ** 2 / (vb ** 2 / 2 + vc ** 2 / 2))
    ratio = c.mean() / b.mean()
    assert low == pytest.approx(ratio * math.exp(-sps.t.ppf(0.975, df) * se))
    assert high == pytest.approx(ratio * math.exp(sps.t.ppf(0.975, df) * se))


def test_a_comparison_names_its_method_and_confidence():
    c = compare([100.0, 101.0, 99.0], [110.0, 111.0, 109.0], higher_is_better=False)
    assert c.verdict == "worse" and c.method == METHOD == c.ci_method and c.confidence == CONFIDENCE
    assert c.ci_low > 1.0 and c.note is None


def test_one_repetition_is_not_enough_and_no_data_is_insufficient():
    one = compare([100.0], [110.0], higher_is_better=False)
    assert one.verdict == "not enough repetitions" and one.n_needed is None
    assert one.note == "1 baseline and 1 candidate repetitions; need at least 2 per side"
    none = compare([], [110.0, 111.0], higher_is_better=False)
    assert none.verdict == "insufficient data" and none.note == "no usable repetitions of the baseline"
    zero = compare([0.0, 0.0], [1.0, 2.0], higher_is_better=True)
    assert zero.verdict == "insufficient data" and "zero or negative" in zero.note


def test_an_inconclusive_comparison_says_how_many_repetitions_would_decide():
    rng = np.random.default_rng(4)
    c = compare(rng.normal(100, 8, 3), rng.normal(100, 8, 3), higher_is_better=False)
    assert c.verdict == "no significant difference"
    assert c.n_needed > 3 and f"about {c.n_needed} per side" in c.note


def test_repetitions_needed_grows_with_the_spread_and_the_tolerance():
    assert repetitions_needed(0.0) == 2
    small, large = repetitions_needed(0.02 ** 2), repetitions_needed(0.08 ** 2)
    assert 2 <= small < large
    assert repetitions_needed(0.08 ** 2, tolerance=0.05) > large  # log-scale: 5% beyond 5% is a smaller step
    # the sizing is right: at n_needed, a real 5% change is detected about 80% of the time
    rng = np.random.default_rng(0)
    n = repetitions_needed(0.04 ** 2)
    hits = sum(compare(rng.normal(100, 4, n), rng.normal(105, 4.2, n), higher_is_better=False).verdict == "worse"
               for _ in range(300))
    assert 0.7 <= hits / 300 <= 0.95


def test_identical_values_on_both_sides_give_a_zero_width_interval():
    c = compare([5.0, 5.0, 5.0], [6.0, 6.0, 6.0], higher_is_better=True)
    assert c.ci_low == c.ci_high == pytest.approx(1.2) and c.verdict == "better"
