"""The genai-bench dataset notation parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchflow.errors import SpecError
from benchflow.workload import (
    DeterministicLengths, NormalLengths, UniformLengths, parse_dataset, parse_notation,
)

counts = st.integers(min_value=1, max_value=100_000)
spaces = st.sampled_from(["", " ", "  "])


@given(counts, counts, spaces, spaces)
def test_deterministic(i, o, s1, s2):
    parsed = parse_notation(f"{s1}D({s1}{i},{s2}{o}){s2}")
    assert parsed == DeterministicLengths(i, o)
    assert parse_notation(parsed.notation) == parsed


@given(st.floats(0.5, 1e5), st.floats(0, 1e5), st.floats(0.5, 1e5), st.floats(0, 1e5))
def test_normal_round_trips_through_its_notation(mi, si, mo, so):
    parsed = parse_notation(f"N({mi!r},{si!r})/({mo!r},{so!r})")
    assert parsed == NormalLengths(mi, si, mo, so)
    assert parse_notation(parsed.notation) == parsed


@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000))
def test_uniform_needs_min_le_max(a, b, c, d):
    text = f"U({a},{b}) / ({c},{d})"
    if a <= b and c <= d:
        assert parse_notation(text) == UniformLengths(a, b, c, d)
    else:
        with pytest.raises(ValueError, match="min must be <= max"):
            parse_notation(text)


@pytest.mark.parametrize(
    "text",
    ["D(100)", "N(1,2)", "U(1,2)", "D(1,2)/(3,4)", "D(0,5)", "D(1.5,2)", "N(-1,2)/(3,4)", "N(1,-2)/(3,4)",
     "X(1,2)", "", "D", "D(a,b)", "D(1,2", "D(1e999,2)"],
)
def test_malformed_notation_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse_notation(text)


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_value_error(text):
    try:
        parsed = parse_notation(text)
    except ValueError as e:
        assert str(e)
    else:
        assert parse_notation(parsed.notation) == parsed


def test_parse_dataset_raises_spec_error_for_the_cli():
    with pytest.raises(SpecError) as info:
        parse_dataset("D(100)")
    assert info.value.problems[0].startswith("dataset: malformed distribution 'D(100)'")
