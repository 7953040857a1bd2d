"""Charts inside other documents: markdown ``data:`` images and inline HTML ``<svg>``."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

_PROLOG = re.compile(r"\A\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", re.S)


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def inline_svg(svg: str) -> str:
    """The ``<svg>`` element alone (no XML declaration or DOCTYPE), for inlining in HTML."""
    return _PROLOG.sub("", svg, count=1)


def _alt(name: str) -> str:
    return name.removesuffix(".svg").replace("-", " ")


def charts_markdown(charts: Mapping[str, str], names: list[str] | None = None, heading: str = "## Charts") -> str:
    """Markdown with each chart as an embedded ``data:image/svg+xml;base64`` image.

    ``names``: which charts, in which order (default: the campaign-level ones in the mapping's
    order, i.e. all but the per-cell ``server-*.svg`` series, which stay in the artifact store).
    Prefect's markdown artifacts render these images.
    """
    default = [n for n in charts if not n.startswith("server-")]
    chosen = [n for n in (names if names is not None else default) if n in charts]
    if not chosen:
        return ""
    parts = [heading, ""] if heading else []
    for name in chosen:
        parts += [f"![{_alt(name)}]({data_uri(charts[name])})", ""]
    return "\n".join(parts)
