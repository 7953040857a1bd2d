"""Plain-text tables: generic rows, and the per-cell summary (``benchflow bench``, reports).

Everything returns a string; nothing here prints. Numbers are right-aligned, text is
left-aligned, ``None`` shows as ``-``. ``markdown=True`` gives a GitHub pipe table instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from benchflow.errors import SpecError
from benchflow.stats.keys import MetricKey

__all__ = ["format_value", "render_table", "render_summary", "LATENCY_ROWS", "DIST_COLUMNS", "metric_header",
           "metric_unit", "ci_decimals", "format_sig", "format_estimate", "format_change"]

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


# ---- numbers people can read: units in headers, digits that fit the CI ------------------------

#: (summary key prefix -> words, unit) for column headers.
_METRIC_NAMES = {
    "ttft_ms": ("TTFT", "ms"), "tpot_ms": ("TPOT", "ms"), "itl_ms": ("ITL", "ms"), "e2e_ms": ("E2E latency", "ms"),
    "ntpot_ms": ("NTPOT", "ms"), "client_lag_ms": ("client lag", "ms"),
    "request_throughput": ("request throughput", "req/s"), "output_throughput": ("output throughput", "tok/s"),
    "total_throughput": ("total throughput", "tok/s"), "goodput": ("goodput", "req/s"),
    "slo_attainment": ("SLO attainment", "fraction"), "error_rate": ("error rate", "fraction"),
    "achieved_rate": ("achieved rate", "req/s"), "energy_j": ("energy", "J"),
    "joules_per_output_token": ("energy per output token", "J/tok"),
    "active_output_throughput": ("active output throughput", "tok/s"),
}
#: Significant figures when a number has no usable interval.
DEFAULT_SIG = 3


def metric_parts(metric: str | MetricKey) -> tuple[str, str | None]:
    """``"ttft_ms.p99"`` -> ``("ttft_ms", "p99")``, parsed by :class:`MetricKey`; a key outside the
    metric vocabulary is shown as it is: ``(metric, None)``."""
    try:
        key = MetricKey.parse(metric)
    except SpecError:
        return str(metric), None
    return key.metric, key.stat


def metric_header(metric: str | MetricKey) -> str:
    """``ttft_ms.p99`` -> ``TTFT p99 (ms)``; ``output_throughput`` -> ``output throughput (tok/s)``."""
    name, stat = metric_parts(metric)
    words, unit = _METRIC_NAMES.get(name, (name, ""))
    text = f"{words} {stat}" if stat else words
    return f"{text} ({unit})" if unit else text


def metric_unit(metric: str | MetricKey) -> str:
    return _METRIC_NAMES.get(metric_parts(metric)[0], ("", ""))[1]


def ci_decimals(low: float | None, high: float | None) -> int | None:
    """Decimal places an estimate with interval ``low..high`` supports: the half-width to one
    significant figure, or two when its first digit is 1 (5.2–6.6 -> 1; 1100–1370 -> -1, i.e. tens).
    ``None`` when there is no interval of positive width."""
    if low is None or high is None or not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return None
    half = (high - low) / 2
    exponent = math.floor(math.log10(half))
    first = int(half / 10 ** exponent)
    return -exponent + (1 if first == 1 else 0)


def _round_text(value: float, decimals: int) -> str:
    from decimal import ROUND_HALF_UP, Decimal

    q = Decimal(1).scaleb(-decimals)  # 10**-decimals
    d = Decimal(repr(float(value))).quantize(q, rounding=ROUND_HALF_UP)
    text = f"{d:,.{max(decimals, 0)}f}" if decimals > 0 else f"{int(d):,}"
    return "0" if text in ("-0", "-0.0") or float(d) == 0 and decimals <= 0 else text


def format_sig(value: float | None, sig: int = DEFAULT_SIG) -> str:
    """``value`` to ``sig`` significant figures (no exponent for ordinary magnitudes)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0:
        return "0"
    return _round_text(value, sig - 1 - math.floor(math.log10(abs(value))))


def format_estimate(mean: float | None, low: float | None = None, high: float | None = None, *,
                    non_negative: bool = True) -> tuple[str, str]:
    """``(mean, "low–high")`` as text with the digits the interval supports.

    Quantities that cannot be negative (latencies, rates, counts) have their lower bound
    **truncated at 0**: a t interval of ``-3.1..9.8`` ms prints as ``0–9.8``.
    """
    if mean is None:
        return "-", ""
    if non_negative and low is not None:
        low = max(0.0, low)
    decimals = ci_decimals(low, high)
    if decimals is None:
        return format_sig(mean), ("" if low is None or high is None else f"{format_sig(low)}–{format_sig(high)}")
    return _round_text(mean, decimals), f"{_bound_text(low, decimals)}–{_bound_text(high, decimals)}"


def _bound_text(value: float, decimals: int) -> str:
    """An interval bound: at the estimate's decimals, with up to one more decimal so that a wide
    interval's small bound keeps a significant figure (3.2 with an estimate rounded to tens
    prints as 3, not 0)."""
    if value == 0:
        return "0"
    return _round_text(value, min(max(decimals, 1 - math.floor(math.log10(abs(value)))), decimals + 1))


def format_change(ratio: float | None, low: float | None = None, high: float | None = None) -> str:
    """A ratio as a signed percent change with its interval: ``-60% (-70 to -45%)``.

    Ratio intervals are asymmetric (they come from a log-scale interval), so the change is
    rounded by the narrower side of its interval; the bounds keep two significant figures each.
    """
    if ratio is None:
        return "-"
    if ratio >= 2 and (low is None or low >= 2):  # big changes read better as multiples
        mean, ci = format_estimate(ratio, low, high)
        return f"{mean}×" + (f" ({ci}×)" if ci else "")
    pct = (ratio - 1) * 100
    lo, hi = (None, None) if low is None or high is None else ((low - 1) * 100, (high - 1) * 100)
    decimals = None
    if lo is not None and hi is not None:
        narrow = min(pct - lo, hi - pct)
        decimals = ci_decimals(pct - narrow, pct + narrow) if narrow > 0 else None

    def signed(text: str) -> str:
        return text if text.startswith("-") or float(text.replace(",", "")) == 0 else "+" + text

    point = _round_text(pct, decimals) if decimals is not None else format_sig(pct, 2)
    body = f"{signed(point)}%"
    if lo is None:
        return body

    def bound(v: float) -> str:
        text = format_sig(v, 2)
        return _bound_text(v, decimals) if decimals is not None and "." in text else text

    return f"{body} ({signed(bound(lo))} to {signed(bound(hi))}%)"
