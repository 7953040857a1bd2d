"""The chart functions: deterministic SVG, series findable by id, no interval below zero, small files."""

from __future__ import annotations

import re

import pandas as pd

from benchflow.charts import charts_markdown, data_uri, inline_svg
from benchflow.charts import plots

MAX_SVG_BYTES = 80_000


def _agg(backend, load, metric, mean, low=None, high=None, t_low=None, t_high=None):
    return {"backend_name": backend, "load_label": load, "metric": metric, "n": 3, "mean": mean,
            "ci_low": low, "ci_high": high, "t_low": t_low, "t_high": t_high}


def _aggregates():
    rows = []
    for b, scale in (("mns8", 1.0), ("mns48", 0.6)):
        for i, load in enumerate(("c4", "c16", "c32")):
            rows.append(_agg(b, load, "output_throughput", 500.0 * (i + 1) / scale, 450.0 * (i + 1) / scale,
                             550.0 * (i + 1) / scale))
            for m in ("ttft_ms", "tpot_ms", "e2e_ms"):
                for stat, k in (("p50", 1.0), ("p99", 3.0)):
                    mean = 20.0 * k * (i + 1) * scale
                    # a t interval that reaches below zero: it must be truncated
                    rows.append(_agg(b, load, f"{m}.{stat}", mean, t_low=-mean, t_high=2 * mean))
    return rows


def _path_d_of_group(svg: str, gid: str) -> list[str]:
    m = re.search(rf'<g id="{re.escape(gid)}">(.*?)</g>', svg, re.S)
    assert m, f"no <g id={gid!r}>"
    return re.findall(r'<path d="([^"]+)"', m.group(1)) + re.findall(r'<use xlink:href="#([^"]+)"', m.group(1))


def test_the_latency_throughput_chart_has_a_line_per_backend_and_stat_and_is_deterministic():
    svg = plots.latency_throughput_svg(_aggregates())
    assert svg == plots.latency_throughput_svg(_aggregates())  # byte-identical: no churn
    for b in ("mns8", "mns48"):
        for m in ("ttft_ms", "tpot_ms", "e2e_ms"):
            for stat in ("p50", "p99"):
                assert _path_d_of_group(svg, f"series-lt-{b}-{m}-{stat}")
    assert "<dc:date>" not in svg and "Created with matplotlib" not in svg
    assert len(svg.encode()) < MAX_SVG_BYTES


def test_intervals_of_non_negative_quantities_are_truncated_at_zero():
    assert plots.interval({"t_low": -5.0, "t_high": 10.0}) == (0.0, 10.0)
    assert plots.interval({"ci_low": 1.0, "ci_high": 2.0, "t_low": -5.0, "t_high": 10.0}) == (1.0, 2.0)
    assert plots.interval({"ci_low": None, "t_low": None}) == (None, None)
    # error bars below the mean never reach past zero
    err = plots._err([{"mean": 3.0, "t_low": -9.0, "t_high": 6.0}])
    assert err[0][0] == 3.0 and err[1][0] == 3.0


def test_the_cdf_is_thinned_so_the_svg_does_not_grow_with_the_requests():
    x, f = plots.ecdf_points(list(range(10_000)), max_points=200)
    assert len(x) <= 200 and x[0] == 0 and x[-1] == 9999 and f[-1] == 1.0
    small = plots.cdf_svg({"a": {"ttft_ms": [1.0, 2.0, 3.0], "tpot_ms": [1.0], "e2e_ms": [5.0, 6.0]}}, "c4")
    big = plots.cdf_svg({"a": {k: [float(i) for i in range(20_000)] for k in ("ttft_ms", "tpot_ms", "e2e_ms")}})
    for svg in (small, big):
        for m in ("ttft_ms", "tpot_ms", "e2e_ms"):
            assert _path_d_of_group(svg, f"series-cdf-a-{m}")
    assert len(big.encode()) < MAX_SVG_BYTES


def _samples(metric, values, source="server", labels="{}"):
    return [{"t_ns": i * 100_000_000, "at": None, "source": source, "metric": metric, "labels": labels,
             "value": v} for i, v in enumerate(values)]


def test_the_server_time_series_shades_the_active_window_and_shows_gpu_power():
    server = pd.DataFrame(_samples(plots.KV_GAUGE, [0.1, 0.5, 0.8, 0.9, 0.75, 0.2])
                          + _samples(plots.RUNNING, [1, 4, 8, 8, 8, 2]) + _samples(plots.WAITING, [0, 0, 3, 5, 1, 0]))
    gpu = pd.DataFrame(_samples("gpu_power_w", [100, 300, 650, 690, 600, 150], "gpu", '{"gpu":"0"}'))
    svg = plots.server_timeseries_svg(server, gpu, title="mns8 at c16, repetition 1")
    for gid in ("series-server-kv_cache_usage", "series-server-running", "series-server-waiting",
                "series-server-gpu_power-0"):
        assert _path_d_of_group(svg, gid)
    assert svg.count('id="active-window') >= 3  # one shaded span per panel
    calm = plots.server_timeseries_svg(server.assign(value=0.1))
    assert 'id="active-window' not in calm and "gpu_power" not in calm
    assert "no server metrics" in plots.server_timeseries_svg(pd.DataFrame(columns=server.columns))


def test_the_forest_plot_shows_ratio_ci_tolerance_and_verdict():
    rows = [{"load_label": "c16", "metric": "ttft_ms.p99", "baseline_ref": "mns8", "candidate_ref": "mns48",
             "ratio": 0.4, "ci_low": 0.3, "ci_high": 0.55, "verdict": "better", "tolerance": 0.02},
            {"load_label": "c4", "metric": "ttft_ms.p99", "baseline_ref": "mns8", "candidate_ref": "mns48",
             "ratio": 1.01, "ci_low": -0.5, "ci_high": 5000.0, "verdict": "no significant difference",
             "tolerance": 0.02},
            {"load_label": "c4", "metric": "goodput", "baseline_ref": "mns8", "candidate_ref": "mns48",
             "ratio": None, "verdict": "insufficient data", "tolerance": 0.02}]
    svg = plots.forest_svg(rows)
    assert _path_d_of_group(svg, "series-forest-mns48-c16-ttft_ms.p99")
    assert _path_d_of_group(svg, "series-forest-mns48-c16-ttft_ms.p99-ci")
    assert 'id="tolerance-band"' in svg and "better" in svg and "no significant difference" in svg
    assert "goodput" not in svg  # no ratio, no row
    assert "no comparison has a ratio" in plots.forest_svg(rows[2:])


def test_charts_embed_as_data_uris_in_markdown_and_inline_in_html():
    svg = plots.forest_svg([])
    md = charts_markdown({"comparisons.svg": svg, "other.svg": svg}, names=["comparisons.svg"])
    assert md.startswith("## Charts") and md.count("data:image/svg+xml;base64,") == 1
    assert data_uri(svg) in md
    assert inline_svg(svg).startswith("<svg") and "DOCTYPE" not in inline_svg(svg)
    assert charts_markdown({}) == ""
    default = charts_markdown({"latency-throughput.svg": svg, "server-abc.svg": svg})
    assert default.count("data:image/svg+xml;base64,") == 1 and "server abc" not in default
