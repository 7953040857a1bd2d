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


def test_campaign_and_tuning_specs_name_metrics_with_one_vocabulary():
    """A metric key means the same in a campaign's compare block and a tuning objective: both are parsed
    by MetricKey (benchflow.metric_key); a key one accepts, the other accepts, with the same message (a
    tuning objective may also be ``slo_capacity``, and its message says so)."""
    import pytest
    from pydantic import TypeAdapter, ValidationError

    from benchflow.metric_key import MetricKey
    from benchflow.spec import SummaryMetric
    from benchflow.tuning.spec import Metric

    campaign, tuning = TypeAdapter(SummaryMetric), TypeAdapter(Metric)
    for good in ("ttft_ms.p99", "tpot_ms.mean", "output_throughput", "goodput", "active_tasks_per_min"):
        assert campaign.validate_python(good) == tuning.validate_python(good) == good
        assert MetricKey.parse(good).key == good
    for bad in ("ttft.p99", "ttft_ms.p42", "ttft_ms.", "errors.timeout", "ttft_ms.count", "nope"):
        messages = []
        for adapter in (campaign, tuning):
            with pytest.raises(ValidationError) as info:
                adapter.validate_python(bad)
            messages.append(info.value.errors()[0]["msg"])
        assert messages[1].startswith(messages[0]) and f"unknown summary metric {bad!r}" in messages[0]
