"""The report's tables, readable: rows grouped by load point (backends side by side), a unit in
every header, numbers rounded to the digits their CI supports, intervals of non-negative
quantities truncated at 0, comparisons with both means. Plus the one-line answer and the setup
(engine args, SLO). Pure functions of the stored rows; each table is ``(headers, rows of text)``.
"""

from __future__ import annotations

import re
from typing import Any

from benchflow.stats.keys import MetricKey
from benchflow.tables import format_change, format_estimate, format_sig, metric_header, metric_parts

Table = tuple[list[str], list[list[str]]]

#: Shown under every table that has intervals.
TRUNCATION_NOTE = ("Intervals are 95% CIs across repetitions (bootstrap; t when the bootstrap is undefined); "
                   "lower bounds of latencies and rates are truncated at 0.")


def natural(text: Any) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text)))


def interval_of(row: dict[str, Any]) -> tuple[float | None, float | None]:
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        return row["ci_low"], row["ci_high"]
    return row.get("t_low"), row.get("t_high")


def estimate_text(row: dict[str, Any] | None) -> str:
    """``mean (low–high)`` of an aggregate row, with the digits its interval supports."""
    if row is None or row.get("mean") is None:
        return "-"
    low, high = interval_of(row)
    mean, ci = format_estimate(row["mean"], low, high)
    return f"{mean} ({ci})" if ci else mean


def metric_order(metrics: set[str]) -> list[str]:
    first = ["output_throughput", "request_throughput", "goodput", "slo_attainment"]
    lat = sorted((m for m in metrics if m not in first), key=natural)
    return [m for m in first if m in metrics] + lat


def aggregate_wide(aggregates: list[dict[str, Any]]) -> Table:
    """One row per (load point, backend), one column per metric: ``mean (CI)``."""
    aggregates = [a for a in aggregates if a["metric"] != "slo_capacity_rps"]  # reported on their own
    by = {(a["load_label"], a["backend_name"], a["metric"]): a for a in aggregates}
    metrics = metric_order({a["metric"] for a in aggregates})
    pairs = sorted({(lo, b) for lo, b, _ in by}, key=lambda p: (natural(p[0]), natural(p[1])))
    headers = ["load", "backend", "reps"] + [metric_header(m) for m in metrics]
    rows = []
    for load, backend in pairs:
        n = max((by[(load, backend, m)].get("n") or 0) for m in metrics if (load, backend, m) in by)
        rows.append([load, backend, str(n)] + [estimate_text(by.get((load, backend, m))) for m in metrics])
    return headers, rows


#: Long-format aggregate rows (the Prefect table artifact): these headers, one row per metric.
AGG_HEADERS = ["load", "backend", "metric", "reps", "mean", "95% CI"]


def aggregate_long(aggregates: list[dict[str, Any]]) -> list[list[str]]:
    aggregates = [a for a in aggregates if a["metric"] != "slo_capacity_rps"]  # reported on their own
    out = []
    for a in sorted(aggregates, key=lambda a: (natural(a["load_label"]), natural(a["backend_name"]),
                                               metric_order({a["metric"]}) and natural(a["metric"]))):
        low, high = interval_of(a)
        mean, ci = format_estimate(a.get("mean"), low, high)
        out.append([a["load_label"], a["backend_name"], metric_header(a["metric"]), str(a.get("n")), mean,
                    ci or ("undefined (n<2)" if (a.get("n") or 0) < 2 else "undefined")])
    return out


def _detail(c: dict[str, Any], key: str) -> Any:
    return c.get(key) if c.get(key) is not None else (c.get("detail") or {}).get(key)


CMP_HEADERS = ["load", "metric", "baseline", "baseline mean", "candidate", "candidate mean",
               "change (97.5% CI)", "verdict", "reason"]


def comparison_long(comparisons: list[dict[str, Any]],
                    aggregates: list[dict[str, Any]] | None = None) -> list[list[str]]:
    """One row per comparison: both means (rounded by their own aggregate's CI when known), the
    change as a percent with its CI, the verdict and the reason."""
    by = {(a["backend_name"], a["load_label"], a["metric"]): a for a in aggregates or []}

    def mean_text(backend: str, load: str, metric: str, value: Any) -> str:
        agg = by.get((backend, load, metric))
        if agg is not None and agg.get("mean") is not None:
            low, high = interval_of(agg)
            return format_estimate(agg["mean"], low, high)[0]
        return format_sig(value) if isinstance(value, (int, float)) else "-"

    out = []
    for c in sorted(comparisons, key=lambda c: (natural(c["load_label"]), natural(c["metric"]),
                                                natural(c["candidate_ref"]))):
        load, metric = c["load_label"], c["metric"]
        out.append([load, metric_header(metric), c["baseline_ref"],
                    mean_text(c["baseline_ref"], load, metric, _detail(c, "baseline_mean")),
                    c["candidate_ref"], mean_text(c["candidate_ref"], load, metric, _detail(c, "candidate_mean")),
                    format_change(c.get("ratio"), c.get("ci_low"), c.get("ci_high")),
                    c.get("verdict") or "", c.get("reason") or ""])
    return out


_SHORT = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "itl_ms": "ITL", "e2e_ms": "E2E", "ntpot_ms": "NTPOT",
          "output_throughput": "throughput", "request_throughput": "request rate", "total_throughput":
          "total throughput", "goodput": "goodput", "slo_attainment": "SLO attainment"}


def short_metric(metric: str | MetricKey) -> str:
    name, stat = metric_parts(metric)
    base = _SHORT.get(name, name)
    return f"{stat} {base}" if stat else base


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _pct(ratio: float) -> str:
    """A change in two significant figures: ``-60%``, ``+42%``, or ``13×`` from twice up."""
    if ratio >= 2:
        return f"{format_sig(ratio, 2)}×"
    text = format_sig((ratio - 1) * 100, 2)
    return (text if text.startswith("-") or text == "0" else "+" + text) + "%"


def one_line_answer(comparisons: list[dict[str, Any]]) -> str:
    """The report's first line: who is better than whom, where, and by how much; or that no
    backend is clearly better. E.g. "mns48 is better than mns8 at c16 and c32 (p99 TTFT -60%,
    throughput +42 to +99%); no difference at c4"."""
    pairs = sorted({(c["candidate_ref"], c["baseline_ref"]) for c in comparisons}, key=lambda p: natural(p))
    clauses = []
    for cand, base in pairs:
        own = [c for c in comparisons if (c["candidate_ref"], c["baseline_ref"]) == (cand, base)]
        loads = sorted({c["load_label"] for c in own}, key=natural)
        verdicts = {lo: {c.get("verdict") for c in own if c["load_label"] == lo} for lo in loads}
        better = [lo for lo in loads if "better" in verdicts[lo] and "worse" not in verdicts[lo]]
        worse = [lo for lo in loads if "worse" in verdicts[lo] and "better" not in verdicts[lo]]
        mixed = [lo for lo in loads if {"better", "worse"} <= verdicts[lo]]
        same = [lo for lo in loads if verdicts[lo] == {"no significant difference"}]
        if not (better or worse or mixed):
            continue
        parts = []
        for what, where in (("better", better), ("worse", worse)):
            if where:
                decided = [c for c in own if c["load_label"] in where and c.get("verdict") == what]
                effects = []
                for metric in metric_order({c["metric"] for c in decided}):
                    ratios = sorted(c["ratio"] for c in decided if c["metric"] == metric and c.get("ratio"))
                    if ratios:
                        first, last = _pct(ratios[0]), _pct(ratios[-1])
                        rng = first if first == last else f"{first.rstrip('%')} to {last}"
                        effects.append(f"{short_metric(metric)} {rng}")
                parts.append(f"{what} than {base} at {_and(where)}" + (f" ({', '.join(effects)})" if effects else ""))
        if mixed:
            parts.append(f"mixed at {_and(mixed)}")
        if same:
            parts.append(f"no difference at {_and(same)}")
        clauses.append(f"{cand} is " + "; ".join(parts))
    if not clauses:
        if any(c.get("verdict") == "no significant difference" for c in comparisons):
            return "No backend is clearly better: no compared metric differs significantly."
        return "No backend is clearly better: nothing could be compared (see below)."
    return ". ".join(clauses) + "."


def setup_lines(campaign: dict[str, Any], backends: list[dict[str, Any]] | None = None) -> list[str]:
    """Each backend's engine args and the SLO, from the backends rows or the stored spec."""
    spec = campaign.get("spec") or {}
    rows = backends if backends else spec.get("backends") or []
    lines = []
    for b in sorted(rows, key=lambda b: natural(b.get("name", ""))):
        args = b.get("engine_args") or {}
        text = " ".join(f"--{k} {v}" for k, v in sorted(args.items())) or "(none)"
        lines.append(f"backend {b.get('name')} ({b.get('kind', '?')}): engine args {text}")
    slo = spec.get("slo")
    if slo:
        parts = []
        for metric, stats in sorted(slo.items()):
            if isinstance(stats, dict):
                parts += [f"{metric.upper()} {stat} ≤ {limit}" for stat, limit in sorted(stats.items())]
            else:
                parts.append(f"{metric}: {stats}")
        lines.append("SLO: " + ", ".join(parts))
    else:
        lines.append("SLO: none (goodput and SLO attainment not computed)")
    return lines
