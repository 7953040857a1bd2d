"""The self-contained HTML report (``benchflow report ID --html out.html``): the one-line
answer, the setup, the plain-words verdicts, the charts inline as ``<svg>`` and the readable
tables, from a Jinja2 template shipped with the package. No network resource is referenced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from benchflow import report, report_tables as rt
from benchflow import report_words as words
from benchflow.charts.embed import inline_svg

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TEMPLATE = "report.html.j2"

_NUMERIC = re.compile(r"^[-+]?[\d,.]+(×|%)?( \(.*\))?$|^-$")


def _bold(text: str) -> Markup:
    """``**x**`` (the markdown of the plain words) as ``<strong>x</strong>``, the rest escaped."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["bold"] = _bold
    return env


def _caption(name: str) -> str:
    if name.startswith("latency-throughput"):
        return ("Latency against output throughput, one line per backend through its load points "
                "(solid p50, dashed p99); bars are 95% CIs across repetitions.")
    if name.startswith("comparisons"):
        return "Each comparison's ratio (candidate / baseline) with its CI, the tolerance band shaded, and the verdict."
    if name.startswith("cdf-"):
        return "Distribution of per-request TTFT, TPOT and E2E latency per backend at one load point."
    if name.startswith("server-"):
        return "Server state over the cell: KV-cache usage, running and waiting requests (active window shaded)."
    return name


def _table(title: str, slug: str, headers: list[str], rows: list[list[Any]], group_col: int | None = 0,
           note: str = "") -> dict[str, Any]:
    out, previous = [], None
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            text = "-" if value is None else str(value)
            cls = "num" if _NUMERIC.match(text) and i > 0 else ""
            if text in ("better", "worse"):
                cls = text
            cells.append({"text": text, "cls": cls})
        key = row[group_col] if group_col is not None else None
        out.append({"cells": cells, "group_start": previous is not None and key != previous})
        previous = key
    return {"title": title, "slug": slug, "headers": headers, "rows": out, "note": note}


def render_html(campaign: dict[str, Any], cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                comparisons: list[dict[str, Any]], charts: Mapping[str, str], *,
                backends: list[dict[str, Any]] | None = None, warning: str | None = None,
                footer: str = "") -> str:
    """One HTML document; ``charts`` is ``{file name: SVG}`` (see render_campaign_charts)."""
    counts = words.cell_counts(cells)
    sentences = [report.verdict_sentence(c) for c in report._decided(comparisons)]
    problems = [f"failed {c['backend_name']} {c['load_label']} rep {c.get('repetition')}: "
                f"{words._first_line(c.get('error')) or c.get('status')}" for c in cells if words.is_failed(c)]
    problems += [f"invalid {c['backend_name']} {c['load_label']} rep {c.get('repetition')}: {words.invalid_cause(c)}"
                 for c in cells if words.invalid_cause(c)]
    agg_headers, agg_rows = rt.aggregate_wide(aggregates)
    tables = [
        _table("Results by load point (mean and 95% CI across repetitions)", "aggregates", agg_headers, agg_rows,
               note=rt.TRUNCATION_NOTE),
        _table("Comparisons (candidate vs baseline)", "comparisons", rt.CMP_HEADERS,
               rt.comparison_long(comparisons, aggregates)),
    ]
    chart_list = [{"slug": name.removesuffix(".svg"), "svg": inline_svg(svg), "caption": _caption(name)}
                  for name, svg in charts.items()]
    return _environment().get_template(TEMPLATE).render(
        campaign={"id": campaign["id"], "name": campaign.get("name", ""), "status": campaign.get("status", "?")},
        warning=warning, answer=rt.one_line_answer(comparisons), counts=report._header_counts(counts),
        setup=rt.setup_lines(campaign, backends), plain_words=words.plain_words(cells, comparisons, sentences),
        problems=problems, charts=chart_list, tables=tables, footer=footer)
