"""Plain-text tables: generic rows, and the per-cell summary (``benchflow bench``, reports).

Everything returns a string; nothing here prints. Numbers are right-aligned, text is
left-aligned, ``None`` shows as ``-``. ``markdown=True`` gives a GitHub pipe table instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_value", "render_table", "render_summary", "LATENCY_ROWS", "DIST_COLUMNS"]

#: Latency blocks of a summary, in display order.
LATENCY_ROWS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ntpot_ms", "client_lag_ms")
#: Columns of a latency block.
DIST_COLUMNS = ("mean", "p50", "p90", "p95", "p99", "min", "max", "count")


def format_value(value: Any, digits: int = 4) -> str:
    """A cell's text: ``-`` for None/NaN, integers as is, floats with ``digits`` significant
    digits (but never in exponent form for ordinary magnitudes), booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-4):
            return f"{value:.{digits - 1}e}"
        if value == 0:
            return "0"
        magnitude = math.floor(math.log10(abs(value)))
        if round(abs(value), digits - 1 - magnitude) >= 10 ** (magnitude + 1):
            magnitude += 1  # 9.9999 rounds to 10.00, not 10.000
        return f"{value:,.{max(0, digits - 1 - magnitude)}f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or value is None


def render_table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None, *,
                 markdown: bool = False, digits: int = 4) -> str:
    """Renders rows (sequences of values) under optional headers as aligned text.

    A column is right-aligned when every value in it is a number (or None). Rows shorter than
    the widest one are padded with empty cells.
    """
    width = max([len(headers or ())] + [len(r) for r in rows]) if (rows or headers) else 0
    if width == 0:
        return ""
    body = [[format_value(v, digits) for v in r] + [""] * (width - len(r)) for r in rows]
    head = [str(h) for h in headers] + [""] * (width - len(headers)) if headers is not None else None
    numeric = [all(_is_number(r[i]) for r in rows if i < len(r)) and bool(rows) for i in range(width)]
    widths = [max([len(r[i]) for r in body] + ([len(head[i])] if head else []) + [1]) for i in range(width)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |" if markdown else "  ".join(parts).rstrip()

    out = []
    if head is not None:
        out.append(line(head))
        if markdown:
            out.append("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                                      for w, num in zip(widths, numeric, strict=True)) + "|")
        else:
            out.append("  ".join("-" * w for w in widths))
    elif markdown:
        raise ValueError("a markdown table needs headers")
    out.extend(line(r) for r in body)
    return "\n".join(out)


def _overview_rows(s: Mapping[str, Any]) -> list[tuple[str, Any]]:
    load = f"concurrency {s['concurrency']}" if s.get("mode") == "closed" else (
        f"rate {s.get('target_rate') or 0:g} req/s" + (
            f", max concurrency {s['concurrency']}" if s.get("concurrency") else ""))
    rows: list[tuple[str, Any]] = [
        ("load", f"{s.get('mode', '?')} loop, {load}"),
        ("duration (s)", s.get("duration_s")),
        ("completed", s.get("completed")),
        ("failed", s.get("failed")),
        ("incomplete", s.get("incomplete")),
        ("error rate", s.get("error_rate")),
        ("request throughput (req/s)", s.get("request_throughput")),
        ("output throughput (tok/s)", s.get("output_throughput")),
        ("total throughput (tok/s)", s.get("total_throughput")),
    ]
    if s.get("mode") == "open":
        rows.append(("achieved rate (req/s)", s.get("achieved_rate")))
    if s.get("goodput") is not None:
        rows += [("goodput (req/s)", s.get("goodput")), ("SLO attainment", s.get("slo_attainment"))]
    estimated = " (estimated)" if s.get("tokens_estimated") else ""
    rows += [("input tokens", s.get("total_input_tokens")), (f"output tokens{estimated}", s.get("total_output_tokens"))]
    rows.append(("valid", "no: " + s["invalid"] if s.get("invalid") else "yes"))
    return rows


def render_summary(summary: Mapping[str, Any], *, title: str | None = None, markdown: bool = False) -> str:
    """The per-cell summary (``benchflow.stats.summarize``'s dict) as readable tables: an
    overview, the latency distributions in milliseconds, and the errors by class."""
    parts = []
    if title:
        parts.append(f"## {title}" if markdown else f"{title}\n{'=' * len(title)}")
    parts.append(render_table([(k, format_value(v)) for k, v in _overview_rows(summary)],
                              ["", "value"], markdown=markdown))
    latency = []
    for key in LATENCY_ROWS:
        block = summary.get(key)
        if isinstance(block, Mapping) and block.get("count"):
            latency.append([key] + [block.get(c) for c in DIST_COLUMNS])
    if latency:
        parts.append(render_table(latency, ["metric", *DIST_COLUMNS], markdown=markdown))
    errors = summary.get("errors") or {}
    if errors:
        rows = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
        parts.append(render_table(rows, ["error class", "count"], markdown=markdown))
    return "\n\n".join(parts)
