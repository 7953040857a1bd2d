"""A campaign's charts: read from the results store, render, store as ``charts/*.svg``.

``render_campaign_charts(results, campaign_id)`` returns ``{file name: SVG text}`` and (by
default) stores each file at ``campaigns/<id>/charts/<name>`` through the artifact store, so
the same call works with the local folder and with S3.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from typing import Any

from benchflow.charts import plots
from benchflow.errors import BenchflowError
from benchflow.store import keys

log = logging.getLogger(__name__)

CHARTS_DIR = "charts"
LATENCY_THROUGHPUT = "latency-throughput.svg"
FOREST = "comparisons.svg"


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text)))


def chart_key(campaign_id: str, name: str) -> str:
    """``campaigns/<id>/charts/<name>``."""
    return f"{keys.campaign_prefix(campaign_id)}/{CHARTS_DIR}/{keys.validate_id(name, 'chart name')}"


def curve_aggregates(stored: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored aggregate rows, plus those the latency-throughput chart needs that the
    campaign did not compare (computed from the cell summaries the same way)."""
    from benchflow.analysis import aggregate_rows

    have = {(a["backend_name"], a["load_label"], a["metric"]) for a in stored}
    have_metrics = {a["metric"] for a in stored}
    missing = [m for m in plots.CURVE_METRICS if m not in have_metrics]
    extra = [a for a in aggregate_rows(summaries, missing)
             if (a["backend_name"], a["load_label"], a["metric"]) not in have] if missing else []
    return list(stored) + extra


def sweep_curves(aggregates: list[dict[str, Any]], cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The aggregate rows the latency-throughput chart draws: a sweep's cells become their own
    series (``<backend> <sweep>``) through its points in rising rate (synchronous run first,
    saturating run last); an SLO-capacity search's probes and the capacity rows are left out."""
    order = {"sync": 0, "point": 1, "saturating": 2}
    where: dict[tuple[str, str], tuple[str, str] | None] = {}
    for c in cells:
        lp = c.get("load_point") or {}
        if not (isinstance(lp, dict) and lp.get("derived_from")):
            continue
        key = (c["backend_name"], c["load_label"])
        if lp.get("role") in order:
            rank = order[lp["role"]] * 10_000 + int(lp.get("point") or 0)
            where[key] = (f"{c['backend_name']} {lp['derived_from']}", f"{rank:06d}")
        else:
            where[key] = None
    out = []
    for a in aggregates:
        if a.get("metric") == "slo_capacity_rps":
            continue
        key = (a["backend_name"], a["load_label"])
        if key not in where:
            out.append(a)
        elif where[key] is not None:
            series, rank = where[key]
            out.append({**a, "backend_name": series, "load_label": rank})
    return out


def _parquet(results: Any, key: str) -> Any:
    import pandas as pd

    if not results.artifacts.exists(key):
        return None
    return pd.read_parquet(io.BytesIO(results.artifacts.get_bytes(key)))


def request_values(results: Any, campaign_id: str, cells: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-request TTFT, TPOT and E2E (ms) of the measured, successful requests of ``cells``."""
    from benchflow.records import frame_to_records
    from benchflow.stats import request_metrics

    out: dict[str, list[float]] = {"ttft_ms": [], "tpot_ms": [], "e2e_ms": []}
    for cell in cells:
        df = _parquet(results, keys.cell_key(campaign_id, cell["cell_id"], keys.REQUESTS))
        if df is None:
            continue
        for record in frame_to_records(df):
            m = None if record.warmup else request_metrics(record)
            if m is None:
                continue
            out["ttft_ms"].append(m.ttft_ns / 1e6)
            out["e2e_ms"].append(m.e2e_ns / 1e6)
            if m.tpot_ns is not None:
                out["tpot_ms"].append(m.tpot_ns / 1e6)
    return out


def with_request_metrics(df: Any) -> Any:
    """``df`` (rows of ``requests.parquet``, e.g. from ``records.load_cell_frame``) with each
    request's ``ttft_ms``, ``tpot_ms`` and ``e2e_ms`` (NaN for warm-up and failed requests)."""
    from benchflow.records import frame_to_records
    from benchflow.stats import request_metrics

    ttft, tpot, e2e = [], [], []
    for record in frame_to_records(df):
        m = None if record.warmup else request_metrics(record)
        ttft.append(m.ttft_ns / 1e6 if m else float("nan"))
        e2e.append(m.e2e_ns / 1e6 if m else float("nan"))
        tpot.append(m.tpot_ns / 1e6 if m and m.tpot_ns is not None else float("nan"))
    return df.assign(ttft_ms=ttft, tpot_ms=tpot, e2e_ms=e2e)


def usable_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cells if c.get("status") == "completed" and not c.get("invalid_reason")]


def default_load(cells: list[dict[str, Any]]) -> str | None:
    """The highest load point (natural order) with a usable cell: where backends differ most (a
    load every backend ran: not a sweep's point or a search's probe, whose rates are each backend's own)."""
    usable = usable_cells(cells)
    shared = [c for c in usable if not (c.get("load_point") or {}).get("derived_from")]
    loads = sorted({c["load_label"] for c in shared or usable}, key=_natural)
    return loads[-1] if loads else None


def cdf_name(load_label: str) -> str:
    return f"cdf-{plots.series_id('x', load_label).removeprefix('series-x-')}.svg"


def server_name(cell_id: str) -> str:
    return f"server-{cell_id}.svg"


def render_campaign_charts(results: Any, campaign_id: str, *, load_label: str | None = None,
                           store: bool = True, server_cells: str = "all") -> dict[str, str]:
    """Every chart of a campaign as ``{file name: SVG}``, in display order.

    ``load_label``: the load point of the CDF chart (default: the highest). ``server_cells``:
    "all" (one server time series per completed cell) or "load" (repetition 1 of each backend at
    ``load_label`` only). ``store``: also put each file under ``campaigns/<id>/charts/``.
    """
    db = results.store
    if db.get_campaign(campaign_id) is None:
        raise BenchflowError(f"no campaign {campaign_id!r} in {results.describe()}")
    cells = db.cells(campaign_id)
    charts: dict[str, str] = {}
    aggregates = curve_aggregates(db.aggregates(campaign_id), db.summaries(campaign_id))
    charts[LATENCY_THROUGHPUT] = plots.latency_throughput_svg(sweep_curves(aggregates, cells))
    comparisons = db.comparisons(campaign_id)
    if comparisons:
        charts[FOREST] = plots.forest_svg(comparisons)
    load = load_label or default_load(cells)
    usable = usable_cells(cells)
    if load is not None:
        backends = sorted({c["backend_name"] for c in usable}, key=_natural)
        values = {b: request_values(results, campaign_id, [c for c in usable
                                                             if c["backend_name"] == b and c["load_label"] == load])
                  for b in backends}
        charts[cdf_name(load)] = plots.cdf_svg(values, load)
    chosen = usable if server_cells == "all" else [
        c for c in usable if c["load_label"] == load and c.get("repetition") == min(
            (x.get("repetition") or 0) for x in usable if x["backend_name"] == c["backend_name"]
            and x["load_label"] == load)]
    for c in sorted(chosen, key=lambda c: (_natural(c["backend_name"]), _natural(c["load_label"]),
                                           c.get("repetition") or 0)):
        server = _parquet(results, keys.cell_key(campaign_id, c["cell_id"], keys.SERVER_METRICS))
        gpu = _parquet(results, keys.cell_key(campaign_id, c["cell_id"], keys.GPU))
        if server is None and gpu is None:
            continue
        title = f"{c['backend_name']} at {c['load_label']}, repetition {c.get('repetition')}"
        charts[server_name(c["cell_id"])] = plots.server_timeseries_svg(server, gpu, title=title)
    if store:
        store_charts(results, campaign_id, charts)
    return charts


def store_charts(results: Any, campaign_id: str, charts: Mapping[str, str]) -> dict[str, str]:
    """Puts each chart at ``campaigns/<id>/charts/<name>`` as one unit through ``Results`` (so
    uploads are verified, recorded as artifact rows, retried, and spooled when storage is down);
    returns name -> URI."""
    blobs = {chart_key(campaign_id, name): svg.encode() for name, svg in charts.items()}
    uris = {name: results.artifacts.uri(chart_key(campaign_id, name)) for name in charts}
    outcome = results._submit("charts", campaign_id, [], blobs, uris)
    log.info("charts of campaign %s: %d %s (%s)", campaign_id, len(uris), outcome.status, outcome.where)
    return uris
