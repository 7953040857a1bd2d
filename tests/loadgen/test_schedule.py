"""Open-loop schedules: pure, seeded, no network."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.errors import SpecError
from benchflow.schedule import interarrival_s, send_offsets_ns, send_offsets_s


def _cv(gaps: np.ndarray) -> float:
    return float(np.std(gaps) / np.mean(gaps))


@pytest.mark.parametrize("arrival,burstiness", [("poisson", 1.0), ("gamma", 0.25), ("gamma", 4.0), ("constant", 1.0)])
def test_mean_rate_matches_target(arrival, burstiness):
    offsets = send_offsets_s(20.0, arrival, n=40_001, burstiness=burstiness, seed=3)
    achieved = (len(offsets) - 1) / offsets[-1]
    assert achieved == pytest.approx(20.0, rel=0.03)


def test_poisson_gaps_are_exponential():
    gaps = interarrival_s(40_000, 5.0, "poisson", seed=1)
    assert _cv(gaps) == pytest.approx(1.0, abs=0.03)
    # P(gap > mean) = 1/e for an exponential distribution
    assert np.mean(gaps > 0.2) == pytest.approx(np.exp(-1), abs=0.01)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 2.0, 4.0])
def test_gamma_burstiness_sets_the_coefficient_of_variation(burstiness):
    gaps = interarrival_s(40_000, 10.0, "gamma", burstiness=burstiness, seed=2)
    assert _cv(gaps) == pytest.approx(1 / np.sqrt(burstiness), rel=0.05)
    assert np.mean(gaps) == pytest.approx(0.1, rel=0.03)


def test_lower_burstiness_is_burstier():
    cvs = [_cv(interarrival_s(20_000, 10.0, "gamma", burstiness=b, seed=0)) for b in (0.2, 1.0, 5.0)]
    assert cvs[0] > cvs[1] > cvs[2]


def test_constant_is_exact():
    offsets = send_offsets_s(8.0, "constant", n=9)
    assert offsets.tolist() == [i * 0.125 for i in range(9)]
    assert send_offsets_ns(4.0, "constant", n=3) == [0, 250_000_000, 500_000_000]


@pytest.mark.parametrize("arrival", ["poisson", "gamma", "constant"])
def test_same_seed_same_schedule_other_seed_other_schedule(arrival):
    a = send_offsets_s(10.0, arrival, n=500, burstiness=0.5, seed=42)
    b = send_offsets_s(10.0, arrival, n=500, burstiness=0.5, seed=42)
    c = send_offsets_s(10.0, arrival, n=500, burstiness=0.5, seed=43)
    assert np.array_equal(a, b)
    assert np.array_equal(a, c) == (arrival == "constant")


def test_duration_bound():
    offsets = send_offsets_s(50.0, "poisson", duration_s=20.0, seed=5)
    assert offsets[-1] <= 20.0
    assert len(offsets) == pytest.approx(1000, rel=0.1)
    both = send_offsets_s(50.0, "poisson", n=100, duration_s=20.0, seed=5)
    assert len(both) == 100  # the request bound comes first here
    few = send_offsets_s(50.0, "constant", n=10_000, duration_s=1.0)
    assert len(few) == 51  # 0, 0.02, ..., 1.0


@given(rate=st.floats(0.1, 1000), arrival=st.sampled_from(["poisson", "gamma", "constant"]),
       burstiness=st.floats(0.05, 20), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_schedule_shape(rate, arrival, burstiness, n, seed):
    offsets = send_offsets_s(rate, arrival, n=n, burstiness=burstiness, seed=seed)
    assert len(offsets) == n
    if n:
        assert offsets[0] == 0.0
        assert np.all(np.diff(offsets) >= 0)
        assert np.all(np.isfinite(offsets))
    ns = send_offsets_ns(rate, arrival, n=n, burstiness=burstiness, seed=seed)
    assert all(isinstance(x, int) for x in ns) and ns == sorted(ns)


@pytest.mark.parametrize("kwargs", [
    {"rate": 0, "arrival": "poisson", "n": 3},
    {"rate": -1, "arrival": "poisson", "n": 3},
    {"rate": float("inf"), "arrival": "poisson", "n": 3},
    {"rate": 1, "arrival": "weibull", "n": 3},
    {"rate": 1, "arrival": "gamma", "burstiness": 0, "n": 3},
    {"rate": 1, "arrival": "poisson"},
    {"rate": 1, "arrival": "poisson", "n": -1},
])
def test_invalid_schedule_requests_are_spec_errors(kwargs):
    with pytest.raises(SpecError):
        send_offsets_s(**kwargs)
