"""One definition of every default (issue 12): the typed records and the statistics helpers take
their defaults from the spec models, not from numbers of their own."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from benchflow.results_types import ComparisonRow
from benchflow.spec import CompareSpec, RegressionSpec
from benchflow.stats import calibration
from tests.store import factories as f


def test_calibration_defaults_are_the_spec_defaults():
    assert list(calibration.DEFAULT_METRICS) == CompareSpec().metrics
    verdicts = inspect.signature(calibration.verdict_rates).parameters
    assert verdicts["tolerance"].default == CompareSpec().tolerance
    assert list(verdicts["metrics"].default) == CompareSpec().metrics
    regressions = inspect.signature(calibration.regression_rates).parameters
    assert regressions["tolerance"].default == RegressionSpec().tolerance


def test_a_comparison_row_has_no_tolerance_of_its_own():
    """A backends comparison takes compare.tolerance, a regression row its regression tolerance:
    a row without one is refused rather than given a third default."""
    row = {k: v for k, v in f.comparison().items() if k != "tolerance"}
    with pytest.raises(ValidationError, match="tolerance"):
        ComparisonRow.model_validate(row)
    assert ComparisonRow.model_validate({**row, "tolerance": 0.05}).tolerance == 0.05
