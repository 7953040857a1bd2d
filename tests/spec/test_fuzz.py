"""Fuzzed specs (Hypothesis, bounded in time): each one is valid or a clean SpecError, never a
traceback, and none takes long. ``bench/fuzz_spec.py`` runs 10,000 of the same inputs."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.spec.fuzz import make_input, run_input

#: Generous on purpose (a busy 2-core machine): a real hang runs for minutes, a normal input for
#: milliseconds. bench/fuzz_spec.py reports inputs over 5 s.
PER_INPUT_LIMIT_S = 30.0


@pytest.mark.timeout(600)
@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.randoms(use_true_random=False))
def test_fuzzed_specs_are_valid_or_clean_spec_errors(rng: random.Random):
    item = make_input(rng)
    outcome = run_input(item)
    assert outcome.kind != "traceback", f"{item.describe()}\n{outcome.detail}"
    assert outcome.seconds < PER_INPUT_LIMIT_S, f"took {outcome.seconds:.1f} s: {item.describe()}"
