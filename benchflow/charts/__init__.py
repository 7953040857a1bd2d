"""Charts of a campaign as deterministic SVG (matplotlib, Agg backend).

Pure chart functions live in :mod:`benchflow.charts.plots`; :func:`render_campaign_charts`
reads a stored campaign and renders (and stores) them all; :func:`charts_markdown` embeds them
in markdown as ``data:`` images (the Prefect report artifact).
"""

from __future__ import annotations

from benchflow.charts.campaign import chart_key, render_campaign_charts, store_charts, with_request_metrics
from benchflow.charts.embed import charts_markdown, data_uri, inline_svg
from benchflow.charts.plots import cdf_svg, forest_svg, latency_throughput_svg, server_timeseries_svg

__all__ = ["cdf_svg", "chart_key", "charts_markdown", "data_uri", "forest_svg", "inline_svg",
           "latency_throughput_svg", "render_campaign_charts", "server_timeseries_svg", "store_charts",
           "with_request_metrics"]
