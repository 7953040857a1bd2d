"""The active window with replicas behind a router (METRICS.md, "Active window"): the backend's
window is that of the mean KV usage across replicas (sample-and-hold on the union of their sample
times), and each replica's own window is reported beside it."""

from __future__ import annotations

import json

import pandas as pd

from benchflow.runner import ACTIVE_GAUGE, active_window_bounds, active_window_detail
from benchflow.stats.window import mean_across_replicas, replica_active_window

S = 1_000_000_000


def test_the_mean_holds_each_replicas_latest_sample_and_waits_for_all():
    series = {"r0": ([0, 2 * S, 4 * S], [0.2, 0.8, 0.4]),
              "r1": ([1 * S, 3 * S], [0.6, 1.0])}
    t, v = mean_across_replicas(series)
    # t=0: r1 has no sample yet (left out); t=1: (0.2+0.6)/2; t=2: (0.8+0.6)/2; t=3: (0.8+1.0)/2; t=4: (0.4+1.0)/2
    assert t == [1 * S, 2 * S, 3 * S, 4 * S]
    assert v == [0.4, 0.7, 0.9, 0.7]


def test_a_missing_sample_keeps_the_previous_value():
    t, v = mean_across_replicas({"r0": ([0, 1, 2], [0.5, float("nan"), None]), "r1": ([0, 1, 2], [0.9, 0.9, 0.9])})
    assert t == [0, 1, 2] and v == [0.7, 0.7, 0.7]


def test_one_hot_replica_has_its_own_window_but_the_backend_window_is_the_pooled_one():
    # r0 is hot from 1 s to 5 s; r1 (sampled half a second later) only at 3.5 and 4.5 s
    t = [i * S for i in range(7)]
    series = {"r0": (t, [0.1, 0.9, 0.9, 0.95, 0.9, 0.75, 0.1]),
              "r1": ([x + S // 2 for x in t], [0.1, 0.1, 0.2, 0.75, 0.75, 0.1, 0.1])}
    window, by_replica = replica_active_window(series)
    assert by_replica == {"r0": (1 * S, 5 * S), "r1": (3 * S + S // 2, 4 * S + S // 2)}
    # pooled: 3 s (0.95+0.2)/2 = 0.575; 3.5 s (0.95+0.75)/2 = 0.85; ... 5 s (0.75+0.75)/2 = 0.75;
    # 5.5 s (0.75+0.1)/2 = 0.425: the backend is active from 3.5 s to 5 s, not r0's 1..5 s
    assert window == (3 * S + S // 2, 5 * S)
    assert replica_active_window({"r0": ([0, 1], [0.1, 0.1])}) == (None, {"r0": None})
    assert replica_active_window({}) == (None, {})


def _frame(rows: list[tuple[int, float, dict]]) -> pd.DataFrame:
    return pd.DataFrame({"t_ns": [r[0] for r in rows], "metric": ACTIVE_GAUGE, "value": [r[1] for r in rows],
                         "labels": [json.dumps(r[2]) for r in rows]})


def test_the_runner_groups_the_samples_by_their_replica_label():
    rows = [(i * S, v, {"engine": "0", "replica": "r0"}) for i, v in enumerate([0.1, 0.9, 0.9, 0.1])]
    rows += [(i * S + 1, v, {"engine": "0", "replica": "r1"}) for i, v in enumerate([0.1, 0.8, 0.1, 0.1])]
    df = _frame(sorted(rows))
    window, by_replica = active_window_detail(df)
    assert by_replica == {"r0": (1 * S, 2 * S), "r1": (1 * S + 1, 1 * S + 1)}
    # pooled: (0.9+0.8)/2 = 0.85 at 1 s + 1 ns; at 2 s (0.9+0.8)/2 again; at 2 s + 1 ns (0.9+0.1)/2 = 0.5
    assert window == active_window_bounds(df) == (1 * S + 1, 2 * S)


def test_one_engine_without_replica_labels_is_unchanged():
    df = _frame([(0, 0.1, {"engine": "0"}), (S, 0.9, {"engine": "0"}), (2 * S, 0.1, {"engine": "0"})])
    assert active_window_detail(df) == ((S, S), {})
    assert active_window_detail(None) == (None, {})
