"""The report's sections for dynamic load points: each SLO capacity with its interval and status,
and each sweep's curve (one row per point, grouped per backend), with the points beyond
saturation flagged. Pure functions of the stored cell and aggregate rows."""

from __future__ import annotations

from typing import Any

from benchflow.report_tables import Table, estimate_text, interval_of, natural
from benchflow.tables import format_estimate, format_sig

#: The aggregate metric of an SLO capacity (:data:`benchflow.engine.dynamic.CAPACITY_METRIC`).
CAPACITY_METRIC = "slo_capacity_rps"
#: The columns of a sweep's curve, after the point and its target rate.
CURVE_METRICS = ("request_throughput", "output_throughput", "ttft_ms.p50", "ttft_ms.p99")
_ROLE_ORDER = {"sync": 0, "point": 1, "saturating": 2}


def split_capacities(aggregates: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(the other aggregate rows, the SLO-capacity rows)``."""
    rest = [a for a in aggregates if a.get("metric") != CAPACITY_METRIC]
    return rest, [a for a in aggregates if a.get("metric") == CAPACITY_METRIC]


def _detail(row: dict[str, Any], key: str) -> Any:
    return row.get(key) if row.get(key) is not None else (row.get("detail") or {}).get(key)


def capacity_lines(capacities: list[dict[str, Any]]) -> list[str]:
    """One sentence per SLO capacity: the rate, its interval, the status, the probes and the method."""
    lines = []
    for row in sorted(capacities, key=lambda r: (natural(r["backend_name"]), natural(r["load_label"]))):
        low, high = interval_of(row)
        status = _detail(row, "status") or "?"
        target = _detail(row, "target_attainment")
        share = f"{target * 100:g}% of requests" if isinstance(target, (int, float)) else "the target share"
        probes = len(_detail(row, "probes") or [])
        if row.get("mean") is None:
            bracket = _detail(row, "bracket")
            where = f" (bracket {format_sig(bracket[0])}–{format_sig(bracket[1])} req/s)" if bracket else ""
            text = f"no capacity ({status}){where}"
        else:
            mean, ci = format_estimate(row["mean"], low, high)
            interval = f", 95% CI {ci}" if ci else ", interval undefined"
            text = f"**{mean} req/s**{interval} ({status})"
        message = _detail(row, "message")
        lines.append(f"{row['backend_name']} {row['load_label']}: SLO capacity {text}: the highest rate at which "
                     f"{share} meet every SLO; {probes} probe cells; method: {_detail(row, 'method') or '?'}"
                     + (f". {message}" if message else ""))
    return lines


def _sweep_cells(cells: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        lp = c.get("load_point") or {}
        if isinstance(lp, dict) and lp.get("derived_from") and lp.get("role") in _ROLE_ORDER:
            out.setdefault((c["backend_name"], lp["derived_from"]), []).append(c)
    return out


def _flags(cells: list[dict[str, Any]]) -> str:
    flags = []
    if any(c.get("status") == "saturated" for c in cells):
        flags.append("saturated (stopped early)")
    if any((c.get("load_point") or {}).get("beyond_saturation") for c in cells):
        flags.append("beyond saturation")
    invalid = [c for c in cells if c.get("invalid_reason")]
    if invalid:
        flags.append(f"invalid in {len(invalid)} of {len(cells)} reps")
    failed = sum(c.get("status") in ("failed", "stalled") for c in cells)
    if failed:
        flags.append(f"{failed} failed")
    return ", ".join(flags)


def sweep_table(cells: list[dict[str, Any]], aggregates: list[dict[str, Any]]) -> Table:
    """One row per sweep point (synchronous run first, saturating run last), grouped per backend:
    the target rate, then the measured rates and TTFT (mean and CI across repetitions) and flags."""
    by = {(a["backend_name"], a["load_label"], a["metric"]): a for a in aggregates}
    headers = ["backend", "sweep", "point", "target (req/s)", "request rate (req/s)", "output throughput (tok/s)",
               "TTFT p50 (ms)", "TTFT p99 (ms)", "flags"]
    rows = []
    for (backend, sweep), group in sorted(_sweep_cells(cells).items(), key=lambda kv: natural(kv[0])):
        labels: dict[str, list[dict[str, Any]]] = {}
        for c in group:
            labels.setdefault(c["load_label"], []).append(c)

        def order(label: str) -> tuple:
            lp = labels[label][0]["load_point"]
            return _ROLE_ORDER[lp["role"]], lp.get("point") or 0

        for label in sorted(labels, key=order):
            lp = labels[label][0]["load_point"]
            rates = [c["load_point"]["rate"] for c in labels[label] if c["load_point"].get("rate")]
            target = format_sig(sum(rates) / len(rates)) if rates else f"concurrency {lp.get('concurrency')}"
            point = {"sync": "sync", "saturating": "max"}.get(lp["role"], f"p{lp.get('point')}")
            rows.append([backend, sweep, point, target]
                        + [estimate_text(by.get((backend, label, m))) for m in CURVE_METRICS] + [_flags(labels[label])])
    return headers, rows


def trace_lines(cells: list[dict[str, Any]]) -> list[str]:
    """One line per trace-replay cell (its ``trace`` summary, :func:`benchflow.trace_replay.trace_summary`):
    the requests sent over the span and the send-time error against the recorded times."""
    lines = []
    for c in cells:
        t = c.get("trace") or (c.get("summary") or {}).get("trace")
        if not isinstance(t, dict):
            continue
        e = t.get("send_error_ms") or {}
        ms = ", ".join(f"{k} {format_sig(e[k])} ms" if isinstance(e.get(k), (int, float)) else f"{k} n/a"
                       for k in ("p50", "p99", "max"))
        lines.append(f"{c['backend_name']} {c['load_label']} rep {c.get('repetition')}: {t.get('sent')} of "
                     f"{t.get('requests')} requests sent over {format_sig(t.get('span_s') or 0)} s "
                     f"(time scale {t.get('time_scale')}); send-time error vs the recorded times: {ms}")
    return lines


def markdown_sections(cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                      capacities: list[dict[str, Any]], table: Any) -> list[str]:
    """The "SLO capacity" and "Load sweeps" sections (none when the campaign has neither)."""
    parts: list[str] = []
    if capacities:
        parts += ["", "## SLO capacity", ""] + [f"- {line}" for line in capacity_lines(capacities)]
    traces = trace_lines(cells)
    if traces:
        parts += ["", "## Trace replays", ""] + [f"- {line}" for line in traces]
    headers, rows = sweep_table(cells, aggregates)
    if rows:
        parts += ["", "## Load sweeps (latency–throughput curve; mean and 95% CI across repetitions)", "",
                  table(headers, rows)]
    return parts


def text_sections(cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                  capacities: list[dict[str, Any]], render: Any) -> list[str]:
    """The terminal version of :func:`markdown_sections`."""
    lines: list[str] = []
    if capacities:
        lines += ["", "SLO capacity:"] + [f"  {line.replace('**', '')}" for line in capacity_lines(capacities)]
    traces = trace_lines(cells)
    if traces:
        lines += ["", "Trace replays:"] + [f"  {line}" for line in traces]
    headers, rows = sweep_table(cells, aggregates)
    if rows:
        lines += ["", "Load sweeps (latency-throughput curve; mean and 95% CI across repetitions):",
                  render(rows, headers)]
    return lines
