"""Active window (gauge above a threshold) and energy over a window."""

from __future__ import annotations

import pytest

from benchflow.stats import active_window, active_window_summary, energy_joules, joules_per_output_token
from tests.stats.helpers import MS, ok, run_of

S = 1_000_000_000


def test_active_window_spans_first_to_last_sample_above_threshold():
    t = [0, 1 * S, 2 * S, 3 * S, 4 * S, 5 * S]
    kv = [0.1, 0.5, 0.8, 0.6, 0.9, 0.2]  # dips below inside the window: still one window
    assert active_window(t, kv) == (2 * S, 4 * S)
    assert active_window(t, kv, threshold=0.85) == (4 * S, 4 * S)
    assert active_window(t, kv, threshold=0.95) is None


def test_active_window_threshold_is_strict_and_ignores_missing_samples():
    assert active_window([0, 1, 2], [0.7, float("nan"), None]) is None
    assert active_window([5, 1, 3], [0.9, 0.9, 0.1]) == (1, 5)  # unsorted samples


def test_active_window_summary_throughput_inside_and_work_outside():
    # request 1: 4 messages (1 token each) at 100..400 ms; request 2 (no per-message counts,
    # usage 6 tokens over 3 messages -> 2 each) at 500, 600, 1500 ms
    run = run_of([ok(1, 0, [100, 200, 300, 400], tokens=4, chunk_tokens=[1, 1, 1, 1]),
                  ok(2, 0, [500, 600, 1500], tokens=6)])
    s = active_window_summary(run, (200 * MS, 1200 * MS))
    inside = 3 + 2 + 2  # 200, 300, 400 ms + 500, 600 ms
    assert s["active_start_ns"] == 200 * MS and s["active_end_ns"] == 1200 * MS
    assert s["active_output_throughput"] == pytest.approx(inside / 1.0)
    assert s["work_outside_active_fraction"] == pytest.approx(3 / 10)


def test_active_window_summary_uses_per_message_counts_when_present():
    run = run_of([ok(1, 0, [100, 900], tokens=10, chunk_tokens=[9, 1])])
    s = active_window_summary(run, (0, 500 * MS))
    assert s["work_outside_active_fraction"] == pytest.approx(0.1)


def test_active_window_summary_without_window_is_all_none():
    assert set(active_window_summary(run_of([]), None).values()) == {None}


def test_energy_over_a_window_interpolates_the_counter():
    t = [0, 1 * S, 2 * S, 3 * S]
    mj = [1_000_000, 1_300_000, 1_600_000, 1_900_000]  # 300 J per second
    assert energy_joules(t, mj) == pytest.approx(900.0)
    assert energy_joules(t, mj, window=(S // 2, 2 * S + S // 2)) == pytest.approx(600.0)


def test_energy_ignores_a_counter_reset_and_clips_to_samples():
    t = [0, 1 * S, 2 * S, 3 * S]
    mj = [5_000, 105_000, 0, 100_000]  # driver reload between 1 s and 2 s
    assert energy_joules(t, mj) == pytest.approx(200.0)
    assert energy_joules(t[:2], mj[:2], window=(-S, 5 * S)) == pytest.approx(100.0)
    assert energy_joules([0], [1.0]) is None


def test_joules_per_output_token():
    assert joules_per_output_token(600.0, 300) == pytest.approx(2.0)
    assert joules_per_output_token(600.0, 0) is None
    assert joules_per_output_token(None, 300) is None
