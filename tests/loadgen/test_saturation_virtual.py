"""The over-saturation detector (benchflow.saturation) on seeded virtual-time runs of the simulator.

The runs go through ``benchflow.sim.virtual`` with the load generator's own open-loop schedule
(``benchflow.schedule``); ``samples_from_timings`` turns them into the series a live watch polling
every ``load_watch.POLL_S`` produces, and the detector is the class the live watch uses.
"""

from __future__ import annotations

import math

import pytest

from benchflow.load_watch import POLL_S
from benchflow.saturation import SaturationConfig, SaturationDetector, Sample, describe, samples_from_timings, slope_interval
from benchflow.schedule import send_offsets_ns
from benchflow.sim.virtual import VirtualRequest, run_closed_loop, run_open_loop
from tests.sim.helpers import engine_config

#: A small engine: at most 4 sequences at once, prompts of 16 tokens and 64 output tokens.
KNOBS = {"max-num-seqs": 4}
PROMPT, OUTPUT = 16, 64
#: The cell's duration bound in these runs.
MAX_DURATION_S = 60.0
FALSE_STOP_SEEDS = 20


def _capacity() -> float:
    """Requests per second the engine serves when it is never idle (a closed loop far above its seqs)."""
    run = run_closed_loop(engine_config(**KNOBS), [VirtualRequest(PROMPT, OUTPUT) for _ in range(300)], 64)
    return run.request_throughput


CAPACITY = _capacity()


def _detect(rate: float, seed: int, config: SaturationConfig = SaturationConfig()) -> tuple[dict | None, SaturationDetector]:
    offsets = send_offsets_ns(rate, "poisson", n=None, duration_s=MAX_DURATION_S, burstiness=1.0, seed=seed)
    run = run_open_loop(engine_config(**KNOBS), [VirtualRequest(PROMPT, OUTPUT, arrival_s=o / 1e9) for o in offsets])
    timings = [(r.arrival_s, r.token_times_s[0], r.token_times_s[-1]) for r in run.requests]
    detector = SaturationDetector(config)
    for sample in samples_from_timings(timings, POLL_S, until_s=MAX_DURATION_S):
        verdict = detector.observe(sample)
        if verdict is not None:
            return verdict, detector
    return None, detector


def test_capacity_of_the_test_engine_is_what_the_rates_assume():
    assert 5.0 < CAPACITY < 10.0, CAPACITY


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_twice_the_capacity_stops_well_before_the_duration_bound(seed):
    verdict, _ = _detect(2 * CAPACITY, seed)
    assert verdict is not None, "not detected"
    assert verdict["at_s"] <= MAX_DURATION_S / 3, verdict["at_s"]
    # the evidence: both slopes above 0 with their intervals, and the outstanding series
    ttft, flight = verdict["ttft"], verdict["in_flight"]
    assert 0 < ttft["slope_s_per_s"]["ci_low"] <= ttft["slope_s_per_s"]["value"] <= ttft["slope_s_per_s"]["ci_high"]
    assert ttft["slope_s_per_s"]["confidence"] == 0.99
    # at twice the capacity the backlog grows by (λ − μ) per second, so the wait of a request sent
    # at t is (λ − μ) t / μ: TTFT rises by about λ/μ − 1 = 1 s per second
    assert 0.4 < ttft["slope_s_per_s"]["value"] < 2.0
    assert 0 < flight["slope_per_s"]["ci_low"]
    assert flight["recent"] >= 2 * flight["early"]
    series = flight["series"]
    assert 2 <= len(series) <= 61 and series[-1][0] == verdict["at_s"]
    assert [t for t, _ in series] == sorted(t for t, _ in series)
    assert verdict["confirmed_for_s"] >= SaturationConfig().confirm_s
    text = describe(verdict)
    assert "no longer keeps up" in text and "99% interval" in text


@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_below_the_capacity_never_stops_early(fraction):
    """Half the capacity (the issue's acceptance) and, as a margin, 80% of it."""
    stops = []
    for seed in range(FALSE_STOP_SEEDS):
        verdict, detector = _detect(fraction * CAPACITY, seed)
        if verdict is not None:
            stops.append((seed, verdict["at_s"]))
        reading = detector.evidence()
        assert reading is not None and not reading["saturated_now"]
    rate = len(stops) / FALSE_STOP_SEEDS
    print(f"false-stop rate at {fraction:.0%} of the capacity: {len(stops)}/{FALSE_STOP_SEEDS} = {rate:.0%}")
    assert stops == [], f"false stops (seed, at_s): {stops}"


def test_a_disabled_detector_never_stops():
    verdict, detector = _detect(2 * CAPACITY, 0, SaturationConfig(enabled=False))
    assert verdict is None and detector.evidence() is None


def test_nothing_is_decided_before_min_seconds_and_min_requests():
    detector = SaturationDetector(SaturationConfig(min_seconds=5, min_requests=10, check_every_s=0))
    # a backlog that grows by one request and 100 ms of TTFT per sample, from the first sample
    for i in range(1, 20):
        t = i * 0.25
        verdict = detector.observe(Sample(t, i, ((t - 0.2, 0.1 * i), (t - 0.1, 0.1 * i + 0.05))))
        assert verdict is None
    assert detector.evidence() is None  # 4.75 s < min_seconds
    for i in range(20, 60):
        t = i * 0.25
        verdict = detector.observe(Sample(t, i, ((t - 0.2, 0.1 * i), (t - 0.1, 0.1 * i + 0.05))))
        if verdict:
            break
    assert verdict is not None and verdict["at_s"] >= 5 + SaturationConfig().confirm_s


def test_config_from_a_spec_block_or_a_mapping():
    from benchflow.spec import LimitsSpec

    limits = LimitsSpec.model_validate({"saturation": {"min_seconds": "5s", "confirm_s": 1}})
    assert SaturationConfig.of(limits.saturation) == SaturationConfig(min_seconds=5.0, confirm_s=1.0)
    assert SaturationConfig.of({"enabled": False}).enabled is False
    assert SaturationConfig.of(None) == SaturationConfig()


def test_slope_interval_on_an_exact_line_and_on_too_few_points():
    s = slope_interval([0, 1, 2, 3], [1, 3, 5, 7], 0.95)
    assert s["value"] == pytest.approx(2.0) and s["ci_low"] == pytest.approx(2.0) and s["n"] == 4
    assert slope_interval([0, 1], [0, 1], 0.95) is None
    assert slope_interval([1, 1, 1], [0, 1, 2], 0.95) is None
    assert math.isfinite(slope_interval([0, 1, 2, 3], [0, 1, 0, 1], 0.95)["ci_high"])
