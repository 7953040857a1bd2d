"""The report's SLO-capacity and sweep sections, and the latency-throughput chart's sweep series,
from stored-shaped rows (the end-to-end run is in test_sweep_campaign.py)."""

from __future__ import annotations

from benchflow import report
from benchflow.charts.campaign import sweep_curves


def _cell(backend, label, role, rep=0, status="completed", **lp):
    load_point = {"derived_from": "sweep3", "role": role, **lp} if role else lp
    return {"cell_id": f"{backend}-{label}-{rep}", "backend_name": backend, "load_label": label, "repetition": rep,
            "status": status, "load_point": load_point, "invalid_reason": None, "error": None}


CELLS = [
    _cell("a", "c4", None, concurrency=4),
    _cell("a", "sweep3-sync", "sync", concurrency=1),
    _cell("a", "sweep3-max", "saturating", concurrency=128),
    _cell("a", "sweep3-p1", "point", point=1, rate=3.0),
    _cell("a", "sweep3-p2", "point", point=2, rate=6.0),
    _cell("a", "sweep3-p3", "point", status="saturated", point=3, rate=9.0, beyond_saturation=True),
    {**_cell("a", "slocap-r4", None, rate=4.0), "load_point": {"derived_from": "slocap", "role": "probe", "rate": 4}},
]


def _agg(label, metric, mean, backend="a", **kw):
    return {"backend_name": backend, "load_label": label, "metric": metric, "n": 3, "mean": mean,
            "ci_low": mean * 0.9, "ci_high": mean * 1.1, **kw}


AGGREGATES = [
    _agg("c4", "output_throughput", 500.0), _agg("c4", "ttft_ms.p50", 40.0),
    _agg("sweep3-sync", "request_throughput", 1.0), _agg("sweep3-max", "request_throughput", 7.5),
    _agg("sweep3-p1", "request_throughput", 3.0), _agg("sweep3-p1", "ttft_ms.p99", 50.0),
    _agg("sweep3-p2", "request_throughput", 5.9), _agg("sweep3-p2", "ttft_ms.p99", 400.0),
    {"backend_name": "a", "load_label": "slocap", "metric": "slo_capacity_rps", "n": 3, "mean": 6.2,
     "ci_low": 5.8, "ci_high": 6.6, "detail": {"status": "found", "method": "bootstrap over 3 repetitions' searches",
                                               "probes": [{}] * 17, "target_attainment": 0.99}},
]
CAMPAIGN = {"id": "cid", "name": "n", "status": "completed", "spec": {}}


def test_text_report_prints_the_capacity_with_its_interval_and_the_sweep_curve_in_rate_order():
    text = report.render_text(CAMPAIGN, CELLS, AGGREGATES, [])
    line = next(x for x in text.splitlines() if "SLO capacity" in x and "req/s" in x)
    assert "a slocap" in line and "6.2 req/s" in line and "5.8" in line and "6.6" in line and "(found)" in line
    assert "17 probe cells" in line and "99% of requests" in line
    sweep = text[text.index("Load sweeps"):]
    rows = [x for x in sweep.splitlines() if x.strip().startswith("a ")]
    assert [r.split()[2] for r in rows] == ["sync", "p1", "p2", "p3", "max"]
    assert "beyond saturation" in rows[3] and "saturated" in rows[3]
    assert "slo_capacity" not in text.split("Results by load point")[-1], "the capacity is not a load-point column"


def test_markdown_report_has_both_sections():
    md = report.render_markdown(CAMPAIGN, CELLS, AGGREGATES, [])
    assert "## SLO capacity" in md and "**6.2 req/s**" in md and "## Load sweeps" in md


def test_latency_throughput_chart_draws_each_sweep_as_its_own_series_in_rate_order():
    rows = sweep_curves(AGGREGATES, CELLS)
    series = sorted({(r["backend_name"], r["load_label"]) for r in rows if r["backend_name"] == "a sweep3"})
    assert [lab for _, lab in series] == sorted(lab for _, lab in series)
    ranks = {r["load_label"]: r["mean"] for r in rows if r["backend_name"] == "a sweep3"
             and r["metric"] == "request_throughput"}
    assert [ranks[k] for k in sorted(ranks)] == [1.0, 3.0, 5.9, 7.5], "sync, p1, p2, then the saturating run"
    assert {r["load_label"] for r in rows if r["backend_name"] == "a"} == {"c4"}, "probes and capacity left out"
