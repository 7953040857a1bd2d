from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchflow.units import format_duration_s, parse_duration_s, parse_size_bytes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("0.5s", 0.5), ("2m", 120.0), ("1500us", 0.0015), ("1500µs", 0.0015), ("250 ms", 0.25),
     ("1h", 3600.0), ("10ns", 1e-8), ("3min", 180.0), (".5s", 0.5), ("1e3ms", 1.0)],
)
def test_durations_with_units(text, seconds):
    assert math.isclose(parse_duration_s(text), seconds)


@pytest.mark.parametrize("value", [500, 0.5, "500"])
def test_bare_numbers_need_a_unit_unless_allowed(value):
    with pytest.raises(ValueError, match="unit is required"):
        parse_duration_s(value)
    assert parse_duration_s(value, allow_bare=True) == float(value)


@pytest.mark.parametrize("value", ["5 parsecs", "ms", "", "-1s", "nans", "infs", True, None, [1]])
def test_bad_durations_are_rejected(value):
    with pytest.raises(ValueError):
        parse_duration_s(value, allow_bare=True)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_format_then_parse_is_exact(seconds):
    assert parse_duration_s(format_duration_s(seconds)) == seconds


@pytest.mark.parametrize(("text", "n"), [("16g", 16 * 2**30), ("512m", 512 * 2**20), ("1GiB", 2**30), (4096, 4096)])
def test_sizes(text, n):
    assert parse_size_bytes(text) == n


@pytest.mark.parametrize("value", ["16q", "-1g", 0, True, "g"])
def test_bad_sizes(value):
    with pytest.raises(ValueError):
        parse_size_bytes(value)
