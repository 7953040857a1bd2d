"""MetricKey: parsed once from "ttft_ms.p99"; the column, label and direction come from it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.errors import SpecError
from benchflow.stats import DIST_KEYS, MetricKey, higher_is_better, is_metric_key, metric_value
from benchflow.stats.keys import HIGHER_IS_BETTER, LATENCY_BLOCKS, LOWER_IS_BETTER

LATENCY_KEYS = st.builds(lambda m, s: f"{m}.{s}", st.sampled_from(LATENCY_BLOCKS), st.sampled_from(DIST_KEYS))
SCALAR_KEYS = st.sampled_from(sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER))
ERROR_KEYS = st.builds(lambda c: f"errors.{c}", st.from_regex(r"[a-z_]{1,20}", fullmatch=True))
VALID = st.one_of(LATENCY_KEYS, SCALAR_KEYS, ERROR_KEYS)


@settings(max_examples=300, deadline=None)
@given(VALID)
def test_a_valid_key_round_trips_through_its_parts(key: str):
    parsed = MetricKey.parse(key)
    assert parsed.key == str(parsed) == key
    assert MetricKey(parsed.metric, parsed.stat) == parsed
    assert parsed.column == key.replace(".", "_")
    assert "." not in parsed.column
    assert parsed.label and parsed.higher_is_better == higher_is_better(key)
    assert is_metric_key(key)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_string_is_either_a_valid_key_or_a_spec_error(text: str):
    try:
        parsed = MetricKey.parse(text)
    except SpecError as e:
        assert not is_metric_key(text)
        assert "not a comparable metric" in str(e)
        with pytest.raises(SpecError):
            higher_is_better(text)
    else:
        assert parsed.key == text


@pytest.mark.parametrize("bad", ["", "ttft_ms", "ttft_ms.", "ttft_ms.p42", "ttft.p99", "errors", "errors.",
                                 "output_throughput.p99", "nope", ".p99"])
def test_invalid_keys_are_refused(bad):
    with pytest.raises(SpecError):
        MetricKey.parse(bad)


def test_parsed_once_and_reused():
    assert MetricKey.parse("ttft_ms.p99") is MetricKey.parse("ttft_ms.p99")
    key = MetricKey.parse("tpot_ms.p50")
    assert MetricKey.parse(key) is key


def test_column_label_unit_and_direction():
    key = MetricKey.parse("ttft_ms.p99")
    assert (key.metric, key.stat, key.column, key.unit) == ("ttft_ms", "p99", "ttft_ms_p99", "ms")
    assert key.label == "TTFT p99 (ms)" and not key.higher_is_better and key.is_latency
    thr = MetricKey.parse("output_throughput")
    assert (thr.stat, thr.column, thr.label, thr.higher_is_better) == (
        None, "output_throughput", "output throughput (tok/s)", True)
    assert MetricKey.parse("errors.timeout").label == "errors: timeout (requests)"
    assert MetricKey.parse("slo_attainment").unit == ""


def test_values_read_from_a_summary():
    summary = {"ttft_ms": {"p99": 12.5, "p50": float("nan")}, "output_throughput": 100, "completed": True,
               "errors": {"timeout": 3}}
    assert MetricKey.parse("ttft_ms.p99").value(summary) == 12.5
    assert metric_value(summary, "ttft_ms.p50") is None            # not finite
    assert metric_value(summary, "tpot_ms.p99") is None            # absent
    assert metric_value(summary, "output_throughput") == 100.0
    assert metric_value(summary, "completed") is None              # a bool is not a number
    assert metric_value(summary, "errors.timeout") == 3.0
    assert metric_value(summary, "errors.http_500") == 0.0         # never happened
    assert metric_value({"window": {"seconds": 2}}, "window.seconds") == 2.0  # other keys still read
