"""Active window and energy (METRICS.md, "Active window" and "Energy").

The active window is the span from the first to the last server sample where a gauge such as
``vllm:kv_cache_usage_perc`` (a 0..1 fraction) is above a threshold. Sample times are
monotonic ``perf_counter_ns`` values on the same clock as the request records.

With replicas behind a router (each replica's samples labelled ``replica``, scraped on its own
ticks), :func:`replica_active_window` gives the backend's window as the window of the *mean* usage
across replicas (the usage of their pooled KV cache when the replicas are alike), each replica's
value held from its latest sample, and each replica's own window beside it (METRICS.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchflow.records import LoadRun
from benchflow.stats.requests import request_metrics

logger = logging.getLogger(__name__)


def active_window(t_ns: Sequence[int], values: Sequence[float | None],
                  threshold: float = 0.7) -> tuple[int, int] | None:
    """``(first, last)`` sample time whose value is strictly above ``threshold``; else ``None``.

    Samples need not be sorted; missing or NaN values are ignored.
    """
    if len(t_ns) != len(values):
        raise ValueError(f"t_ns has {len(t_ns)} samples but values has {len(values)}")
    above = [int(t) for t, v in zip(t_ns, values) if v is not None and not math.isnan(v) and v > threshold]
    if not above:
        return None
    return min(above), max(above)


def mean_across_replicas(series: Mapping[str, tuple[Sequence[int], Sequence[float | None]]]
                         ) -> tuple[list[int], list[float]]:
    """The mean of several replicas' gauges as one series, on the union of their sample times.

    At each time any replica was sampled, every replica contributes its latest value at or before
    that time (sample-and-hold; a missing or NaN sample keeps the previous value). Times before
    every replica has a value are left out, so the mean is always over all of them.
    """
    if not series:
        return [], []
    events: list[tuple[int, int, float | None]] = []
    for k, (t_ns, values) in enumerate(series.values()):
        if len(t_ns) != len(values):
            raise ValueError(f"a replica has {len(t_ns)} sample times but {len(values)} values")
        events += [(int(t), k, v) for t, v in zip(t_ns, values)]
    events.sort(key=lambda e: (e[0], e[1]))
    held: dict[int, float] = {}
    out_t: list[int] = []
    out_v: list[float] = []
    i = 0
    while i < len(events):
        t = events[i][0]
        while i < len(events) and events[i][0] == t:  # every sample at this instant first
            _, k, v = events[i]
            if v is not None and not math.isnan(v):
                held[k] = float(v)
            i += 1
        if len(held) == len(series):
            out_t.append(t)
            out_v.append(sum(held.values()) / len(held))
    return out_t, out_v


def replica_active_window(series: Mapping[str, tuple[Sequence[int], Sequence[float | None]]],
                          threshold: float = 0.7) -> tuple[tuple[int, int] | None, dict[str, tuple[int, int] | None]]:
    """``(window, by_replica)``: the backend's active window (of :func:`mean_across_replicas`) and
    each replica's own window (of its own samples), keyed like ``series``."""
    by_replica = {label: active_window(t, v, threshold) for label, (t, v) in series.items()}
    return active_window(*mean_across_replicas(series), threshold), by_replica


def output_token_times(run: LoadRun) -> tuple[np.ndarray, np.ndarray]:
    """``(t_ns, tokens)`` per output message of the successful measured requests.

    When every message of a request has a token count, its output tokens are split in those
    proportions; otherwise they are spread evenly over its messages.
    """
    times: list[int] = []
    tokens: list[float] = []
    for r in run.records:
        if r.warmup or (m := request_metrics(r)) is None:
            continue
        counts = [n for _, n in r.chunks]
        known = sum(n for n in counts if n is not None)
        if all(n is not None for n in counts) and known > 0:
            per = [n * m.output_tokens / known for n in counts]  # scaled to agree with usage
        else:
            per = [m.output_tokens / len(r.chunks)] * len(r.chunks)
        times.extend(t for t, _ in r.chunks)
        tokens.extend(per)
    return np.asarray(times, dtype=np.int64), np.asarray(tokens, dtype=float)


def active_window_summary(run: LoadRun, window: tuple[int, int] | None) -> dict[str, Any]:
    """Output throughput inside ``window`` and the share of output tokens generated outside it.

    Each output message is attributed to its own timestamp; the window's bounds are inclusive.
    """
    empty = {"active_start_ns": None, "active_end_ns": None,
             "active_output_throughput": None, "work_outside_active_fraction": None}
    if window is None:
        return empty
    start, end = window
    times, tokens = output_token_times(run)
    inside = (times >= start) & (times <= end)
    total, inside_tokens = float(tokens.sum()), float(tokens[inside].sum())
    span_s = (end - start) / 1e9
    return {
        "active_start_ns": int(start),
        "active_end_ns": int(end),
        "active_output_throughput": inside_tokens / span_s if span_s > 0 else None,
        "work_outside_active_fraction": (total - inside_tokens) / total if total > 0 else None,
    }


def energy_joules(t_ns: Sequence[int], energy_mj_counter: Sequence[float],
                  window: tuple[int, int] | None = None) -> float | None:
    """Joules consumed over ``window`` (default: the whole series) from NVML's total-energy
    counter (millijoules since driver load).

    The counter is read at the window's bounds by linear interpolation between samples; a
    counter that goes backwards (driver reload) contributes nothing for that step. A window
    reaching beyond the samples is clipped to them (and logged). ``None`` with fewer than two samples.
    """
    if len(t_ns) != len(energy_mj_counter):
        raise ValueError(f"t_ns has {len(t_ns)} samples but the counter has {len(energy_mj_counter)}")
    if len(t_ns) < 2:
        return None
    order = np.argsort(np.asarray(t_ns, dtype=np.int64), kind="stable")
    t = np.asarray(t_ns, dtype=np.int64)[order]
    raw = np.asarray(energy_mj_counter, dtype=float)[order]
    cumulative = np.concatenate([[0.0], np.cumsum(np.clip(np.diff(raw), 0.0, None))])
    lo, hi = (int(t[0]), int(t[-1])) if window is None else window
    if lo < t[0] or hi > t[-1]:
        logger.info("energy window %s..%s reaches beyond the samples %s..%s; clipped", lo, hi, t[0], t[-1])
    lo, hi = max(lo, int(t[0])), min(hi, int(t[-1]))
    if hi <= lo:
        return None
    t_rel = (t - t[0]).astype(float)
    e_lo, e_hi = np.interp([lo - t[0], hi - t[0]], t_rel, cumulative)
    return float(e_hi - e_lo) / 1000.0


def joules_per_output_token(joules: float | None, output_tokens: int | float | None) -> float | None:
    """Energy per output token; ``None`` when either is unknown or there were no tokens."""
    if joules is None or not output_tokens:
        return None
    return float(joules) / float(output_tokens)
