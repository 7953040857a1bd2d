"""The four charts, each a pure function of plain rows/frames returning SVG text.

- :func:`latency_throughput_svg` — p50/p99 TTFT, TPOT and E2E against output throughput, one line
  per backend across its load points, CI bars from the repetitions (aggregate rows).
- :func:`cdf_svg` — CDFs of TTFT, TPOT and E2E per backend at one load point (raw records).
- :func:`server_timeseries_svg` — KV-cache usage, running and waiting requests, GPU power; the
  active window (KV-cache usage above 70%) shaded.
- :func:`forest_svg` — each comparison's ratio with its CI, the tolerance band and the verdict.

Interval bounds of non-negative quantities are truncated at zero (never drawn below it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from matplotlib.ticker import NullFormatter

from benchflow.charts.svg import new_figure, series_id, to_svg
from benchflow.report_tables import short_metric

#: (metric key prefix, axis label) of the latency charts.
LATENCIES = (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)"), ("e2e_ms", "E2E latency (ms)"))
STATS = ("p50", "p99")
#: Metrics the latency-throughput chart needs from the aggregates.
CURVE_METRICS = tuple(f"{m}.{s}" for m, _ in LATENCIES for s in STATS) + ("output_throughput",)

KV_GAUGE = "vllm:kv_cache_usage_perc"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
ACTIVE_THRESHOLD = 0.7
#: NVML power draw in watts (benchflow.metrics.gpu), labels {"gpu": index, "uuid": ...}.
GPU_POWER = "gpu_power_w"

#: The forest plot's x axis never reaches beyond 1/RATIO_LIMIT .. RATIO_LIMIT.
RATIO_LIMIT = 20.0
VERDICT_COLORS = {"better": "#1a9850", "worse": "#d73027", "no significant difference": "#4d4d4d"}


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text)))


def interval(row: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """An aggregate's CI: the bootstrap one, else the t one; the low bound truncated at 0."""
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None or high is None:
        low, high = row.get("t_low"), row.get("t_high")
    if low is None or high is None:
        return None, None
    return max(0.0, float(low)), float(high)


def _empty(fig_axes: Any, text: str) -> None:
    fig_axes.text(0.5, 0.5, text, ha="center", va="center", transform=fig_axes.transAxes)
    fig_axes.set_axis_off()


def latency_throughput_svg(aggregates: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """One panel per latency (TTFT, TPOT, E2E); in each, per backend, a solid p50 line and a
    dashed p99 line through its load points, x = mean output throughput (tok/s)."""
    by: dict[tuple[str, str, str], Mapping[str, Any]] = {
        (a["backend_name"], a["load_label"], a["metric"]): a for a in aggregates}
    backends = sorted({b for b, _, _ in by}, key=_natural)
    fig, axes = new_figure(7.5, 2.6, 1, len(LATENCIES))
    colors = _colors(backends)
    for ax, (metric, label) in zip(axes[0], LATENCIES):
        ax.set_title(label.split(" (")[0])
        ax.set_xlabel("output throughput (tok/s)")
        ax.set_ylabel(label)
        for backend in backends:
            loads = sorted({lo for b, lo, _ in by if b == backend}, key=_natural)
            for stat, style in zip(STATS, ("-", "--")):
                pts = []
                for load in loads:
                    x, y = by.get((backend, load, "output_throughput")), by.get((backend, load, f"{metric}.{stat}"))
                    if x is None or y is None or x.get("mean") is None or y.get("mean") is None:
                        continue
                    pts.append((load, x, y))
                if not pts:
                    continue
                xs = [float(x["mean"]) for _, x, _ in pts]
                ys = [float(y["mean"]) for _, _, y in pts]
                xerr = _err([x for _, x, _ in pts])
                yerr = _err([y for _, _, y in pts])
                cont = ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o" + style, color=colors[backend],
                                   capsize=0, elinewidth=0.8, label=f"{backend} {stat}")
                cont.lines[0].set_gid(series_id("lt", backend, metric, stat))
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper")
    if title:
        fig.suptitle(title)
    return to_svg(fig)


def _err(rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """Asymmetric error bars (below, above the mean) from each row's interval; 0 when undefined."""
    lows, highs = [], []
    for r in rows:
        low, high = interval(r)
        mean = float(r["mean"])
        lows.append(0.0 if low is None else max(0.0, mean - low))
        highs.append(0.0 if high is None else max(0.0, high - mean))
    return np.array([lows, highs]) if any(lows) or any(highs) else None


def _colors(names: Sequence[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def ecdf_points(values: Sequence[float], max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(x, F(x))`` of the empirical CDF, thinned to at most ``max_points`` quantiles (the
    smallest and largest values always kept), so the SVG size does not grow with the requests."""
    v = np.sort(np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float))
    if v.size == 0:
        return v, v
    f = np.arange(1, v.size + 1) / v.size
    if v.size > max_points:
        idx = np.unique(np.linspace(0, v.size - 1, max_points).round().astype(int))
        v, f = v[idx], f[idx]
    return v, f


def cdf_svg(values: Mapping[str, Mapping[str, Sequence[float]]], load_label: str = "") -> str:
    """``values``: backend -> {"ttft_ms"|"tpot_ms"|"e2e_ms": per-request values in ms}."""
    backends = sorted(values, key=_natural)
    colors = _colors(backends)
    fig, axes = new_figure(7.5, 2.4, 1, len(LATENCIES))
    for ax, (metric, label) in zip(axes[0], LATENCIES):
        ax.set_title(f"{label.split(' (')[0]} CDF" + (f" at {load_label}" if load_label else ""))
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        for backend in backends:
            x, f = ecdf_points(values[backend].get(metric, ()))
            if x.size:
                line, = ax.step(x, f, where="post", color=colors[backend], label=f"{backend} (n={x.size})"
                                if x.size < 200 else backend)
                line.set_gid(series_id("cdf", backend, metric))
        ax.set_xlim(left=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4))
    return to_svg(fig)


def _series(df: Any, metric: str, how: str = "sum") -> tuple[np.ndarray, np.ndarray] | None:
    """(t_ns, value) of one metric, combined over label sets (engines) per sample time: summed
    for counts, averaged (``how="mean"``) for a fraction such as KV-cache usage."""
    if df is None or len(df) == 0:
        return None
    sub = df[df["metric"] == metric]
    if sub.empty:
        return None
    g = sub.groupby("t_ns")["value"].agg(how).sort_index()
    return g.index.to_numpy(dtype=np.int64), g.to_numpy(dtype=float)


def _power_series(gpu: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GPU power per GPU (label set), from the NVML frame's power metric (watts)."""
    if gpu is None or len(gpu) == 0:
        return {}
    if not (gpu["metric"] == GPU_POWER).any():
        return {}
    out = {}
    sub = gpu[gpu["metric"] == GPU_POWER]
    for labels, g in sub.groupby("labels"):
        try:
            d = json.loads(labels) if labels else {}
        except ValueError:
            d = {}
        name = d.get("gpu") or d.get("index") or d.get("uuid") or str(labels)
        g = g.sort_values("t_ns")
        out[str(name)] = (g["t_ns"].to_numpy(dtype=np.int64), g["value"].to_numpy(dtype=float))
    return out


def server_timeseries_svg(server: Any, gpu: Any = None, title: str = "",
                          threshold: float = ACTIVE_THRESHOLD) -> str:
    """Panels: KV-cache usage (%), running and waiting requests, GPU power (W) when ``gpu`` has
    it. The active window (KV-cache usage above ``threshold``) is shaded in every panel."""
    from benchflow.stats.window import active_window

    kv = _series(server, KV_GAUGE, "mean")
    running, waiting = _series(server, RUNNING), _series(server, WAITING)
    power = _power_series(gpu)
    starts = [s[0][0] for s in (kv, running, waiting) if s is not None and len(s[0])]
    starts += [t[0] for t, _ in power.values() if len(t)]
    t0 = min(starts) if starts else 0
    panels = 2 + bool(power)
    fig, axes = new_figure(7.5, 1.5 * panels + 0.4, panels, 1, sharex=True)
    axes = [row[0] for row in axes]
    window = active_window(kv[0].tolist(), kv[1].tolist(), threshold) if kv is not None else None

    def sec(t: np.ndarray) -> np.ndarray:
        return (t - t0) / 1e9

    if kv is not None:
        line, = axes[0].plot(sec(kv[0]), kv[1] * 100, color="#1f77b4", label="KV-cache usage")
        line.set_gid(series_id("server", "kv_cache_usage"))
        axes[0].axhline(threshold * 100, color="#999999", lw=0.6, ls=":")
    axes[0].set_ylabel("KV cache (%)")
    axes[0].set_ylim(0, 105)
    for series, name, color in ((running, "running", "#2ca02c"), (waiting, "waiting", "#d62728")):
        if series is not None:
            line, = axes[1].step(sec(series[0]), series[1], where="post", color=color, label=name)
            line.set_gid(series_id("server", name))
    axes[1].set_ylabel("requests")
    axes[1].set_ylim(bottom=0)
    if running is not None or waiting is not None:
        axes[1].legend(loc="upper right")
    if power:
        for name, (t, v) in sorted(power.items()):
            line, = axes[2].plot(sec(t), v, label=f"GPU {name}")
            line.set_gid(series_id("server", "gpu_power", name))
        axes[2].set_ylabel("GPU power (W)")
        axes[2].set_ylim(bottom=0)
    if window is not None:
        for ax in axes:
            span = ax.axvspan(sec(np.int64(window[0])), sec(np.int64(window[1])), color="#ffbf00", alpha=0.2,
                              lw=0)
            span.set_gid("active-window")
        axes[0].text(0.01, 0.95, f"active window: KV > {threshold:.0%}", transform=axes[0].transAxes,
                     va="top", fontsize=7)
    if kv is None and running is None and waiting is None and not power:
        _empty(axes[0], "no server metrics were sampled")
    axes[-1].set_xlabel("time since the first sample (s)")
    if title:
        fig.suptitle(title)
    return to_svg(fig)


def forest_svg(comparisons: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """One row per comparison with a ratio: the point, its CI, the verdict on the right; the
    tolerance band around 1 shaded."""
    rows = [c for c in comparisons if c.get("ratio") is not None]
    rows.sort(key=lambda c: (_natural(c["load_label"]), c["metric"], _natural(c["candidate_ref"])))
    fig, axes = new_figure(7.5, 0.6 + 0.22 * max(len(rows), 1))
    ax = axes[0][0]
    if not rows:
        _empty(ax, "no comparison has a ratio")
        return to_svg(fig)
    tol = max((float(c.get("tolerance") or 0.0) for c in rows), default=0.0)
    if tol > 0:
        band = ax.axvspan(1 - tol, 1 + tol, color="#cccccc", alpha=0.5, lw=0, label=f"tolerance ±{tol:.0%}")
        band.set_gid("tolerance-band")
    ax.axvline(1.0, color="#555555", lw=0.7)
    labels = []
    for i, c in enumerate(rows):
        y = len(rows) - 1 - i
        color = VERDICT_COLORS.get(c.get("verdict") or "", "#999999")
        ratio = float(c["ratio"])
        low, high = c.get("ci_low"), c.get("ci_high")
        if low is not None and high is not None:
            seg, = ax.plot([max(float(low), 1e-9), float(high)], [y, y], color=color, lw=1.5)
            seg.set_gid(series_id("forest", c["candidate_ref"], c["load_label"], c["metric"], "ci"))
        point, = ax.plot([ratio], [y], "o", color=color)
        point.set_gid(series_id("forest", c["candidate_ref"], c["load_label"], c["metric"]))
        labels.append(f"{c['load_label']} {short_metric(c['metric'])}  {c['candidate_ref']}/{c['baseline_ref']}")
        ax.annotate(c.get("verdict") or "", (1.01, y), xycoords=("axes fraction", "data"), va="center",
                    fontsize=7, color=color, annotation_clip=False)
    ax.set_yticks(range(len(rows) - 1, -1, -1), labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ratios = [float(c["ratio"]) for c in rows if float(c["ratio"]) > 0]
    lo, hi = min(ratios + [1 - tol]) / 1.25, max(ratios + [1 + tol]) * 1.25
    ax.set_xscale("log")
    lo, hi = max(lo, 1 / RATIO_LIMIT), min(hi, RATIO_LIMIT)
    ax.set_xlim(lo, hi)  # a huge CI runs off the edge
    steps = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if hi / lo > 4 else (0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 2)
    nice = [t for t in steps if lo <= t <= hi]
    ax.set_xticks(nice, [f"{t:g}" for t in nice])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ratio candidate / baseline, log scale (bars: CI; shaded: tolerance)")
    ax.grid(axis="y", visible=False)
    if title:
        ax.set_title(title)
    return to_svg(fig)
