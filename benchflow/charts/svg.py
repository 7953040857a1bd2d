"""Figures to deterministic SVG text (matplotlib, Agg backend).

Deterministic: a fixed ``svg.hashsalt`` (ids of clip paths and glyphs), no date or creator in
the metadata, text kept as ``<text>`` (``svg.fonttype = none``: smaller files, and readable by a
test). The same data gives byte-identical SVG, so stored charts do not churn.

Series carry their name as the SVG group id (``gid``): ``series-<chart>-<backend>[-<what>]``;
tests and users find a backend's line by that id (matplotlib writes no ``<title>`` elements).
"""

from __future__ import annotations

import io
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; never a GUI backend in a flow worker

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: The rc settings every chart is drawn with.
RC = {
    "svg.hashsalt": "benchflow",
    "svg.fonttype": "none",
    "svg.image_inline": True,
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.3,
    "lines.markersize": 3.5,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "path.simplify": True,
    "path.simplify_threshold": 0.5,
}
#: Metadata keys that would otherwise carry the date or the matplotlib version.
METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: Any) -> str:
    """A value usable inside an SVG id: letters, digits, ``_ . -``; the rest become ``_``."""
    return _SLUG.sub("_", str(text)).strip("_") or "x"


def series_id(chart: str, *parts: Any) -> str:
    return "-".join(["series", slug(chart), *(slug(p) for p in parts)])


def new_figure(width_in: float, height_in: float, nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    """A figure and its axes, drawn with :data:`RC` (no pyplot global state is kept)."""
    with plt.rc_context(RC):
        fig = Figure(figsize=(width_in, height_in), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def to_svg(fig: Figure) -> str:
    """The figure as SVG text (UTF-8, no XML declaration date, deterministic ids)."""
    buf = io.StringIO()
    with plt.rc_context(RC):
        fig.savefig(buf, format="svg", metadata=METADATA)
    text = buf.getvalue()
    # drop the comment that names the matplotlib version: it would churn on every upgrade
    return re.sub(r"<!-- Created with matplotlib .*? -->\n?", "", text, count=1)
