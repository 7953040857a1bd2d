"""Every default of the summary, analysis and regression code is the spec model's default (one definition)."""

from __future__ import annotations

from benchflow import analysis, regression
from benchflow.spec import CompareSpec, LimitsSpec, RegressionSpec
from benchflow.stats import summary


def test_summary_limits_are_the_spec_limits():
    assert summary.DEFAULT_LIMITS == LimitsSpec().model_dump()


def test_missing_limit_falls_back_on_the_spec_default():
    for name, value in LimitsSpec().model_dump().items():
        assert summary._limit(None, name) == value
        assert summary._limit({}, name) == value


def test_compare_and_regression_tolerances_are_the_spec_defaults():
    assert analysis.DEFAULT_COMPARE_TOLERANCE == CompareSpec().tolerance
    assert regression.DEFAULT_TOLERANCE == RegressionSpec().tolerance
