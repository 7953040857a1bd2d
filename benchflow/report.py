"""The campaign report: plain words first (which backend is better at which load, by how much),
then the aggregate and comparison tables. Rendered as markdown for the Prefect UI and the
artifact store, and as plain text for the terminal.
"""

from __future__ import annotations

import re
from typing import Any

from benchflow.tables import render_table



def _metric_words(metric: str) -> str:
    name, _, stat = metric.partition(".")
    base = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "itl_ms": "ITL", "e2e_ms": "end-to-end latency",
            "ntpot_ms": "NTPOT", "request_throughput": "request throughput",
            "output_throughput": "output throughput", "total_throughput": "total throughput",
            "goodput": "goodput", "slo_attainment": "SLO attainment"}.get(name, name)
    return f"{stat} {base}" if stat else base


def verdict_sentence(row: dict[str, Any]) -> str:
    """One plain sentence for a comparison row."""
    ratio = row.get("ratio")
    cand, base, load, metric = row["candidate_ref"], row["baseline_ref"], row["load_label"], row["metric"]
    words = _metric_words(metric)
    if ratio is None:
        return f"At {load}, {cand} vs {base} on {words}: not enough data."
    verdict = row.get("verdict")
    change = (ratio - 1.0) * 100
    ci = ""
    if row.get("ci_low") is not None:
        ci = f" (ratio {ratio:.3f}, 95% CI {row['ci_low']:.3f}–{row['ci_high']:.3f})"
    if verdict in ("better", "worse"):
        direction = "higher" if change > 0 else "lower"
        amount = f"{ratio:.1f}× as high" if ratio >= 2 else f"{abs(change):.1f}% {direction}"
        return f"At {load}, **{cand}** is {verdict} than **{base}** on {words}: {amount}{ci}."
    return f"At {load}, {cand} and {base} show {verdict or 'no verdict'} on {words} ({change:+.1f}%{ci})."


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    return render_table(rows, headers, markdown=True, digits=3)


def _natural(text: str) -> tuple:
    """Sort key that puts c4 before c16 and r2.5 before r10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def sort_rows(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(_natural(str(r.get(k, ""))) for k in keys))


AGG_HEADERS = ["backend", "load", "metric", "n", "mean", "std", "95% CI (bootstrap)", "95% CI (t)"]
CMP_HEADERS = ["load", "metric", "baseline", "candidate", "ratio", "95% CI", "verdict"]


def aggregate_table_rows(aggregates: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for a in sort_rows(aggregates, "backend_name", "load_label", "metric"):
        boot = "undefined (n<3)" if a.get("ci_low") is None else f"{a['ci_low']:.3f}–{a['ci_high']:.3f} ({a.get('ci_method')})"
        tint = "undefined" if a.get("t_low") is None else f"{a['t_low']:.3f}–{a['t_high']:.3f}"
        out.append([a["backend_name"], a["load_label"], a["metric"], a["n"], a.get("mean"), a.get("std"), boot, tint])
    return out


def comparison_table_rows(comparisons: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for c in sort_rows(comparisons, "load_label", "metric", "candidate_ref"):
        ci = "—" if c.get("ci_low") is None else f"{c['ci_low']:.3f}–{c['ci_high']:.3f}"
        out.append([c["load_label"], c["metric"], c["baseline_ref"], c["candidate_ref"], c.get("ratio"), ci, c.get("verdict")])
    return out


def cell_counts(cells: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"total": len(cells), "completed": 0, "failed": 0, "skipped": 0, "invalid": 0}
    for c in cells:
        counts[c.get("status", "failed")] = counts.get(c.get("status", "failed"), 0) + 1
        if c.get("invalid_reason"):
            counts["invalid"] += 1
    return counts


def render_markdown(campaign: dict[str, Any], cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                    comparisons: list[dict[str, Any]]) -> str:
    counts = cell_counts(cells)
    parts = [f"# Campaign `{campaign['id']}` ({campaign.get('name', '')})", "",
             f"Status **{campaign.get('status', '?')}**: {counts['completed']} of {counts['total']} cells completed, "
             f"{counts['failed']} failed, {counts['skipped']} skipped, {counts['invalid']} marked invalid.", ""]
    significant = [c for c in comparisons if c.get("verdict") in ("better", "worse")]
    parts += ["## In plain words", ""]
    if significant:
        parts += [f"- {verdict_sentence(c)}" for c in sort_rows(significant, "load_label", "metric", "candidate_ref")]
    elif comparisons:
        parts.append("- No significant difference between the backends on any compared metric.")
    else:
        parts.append("- Nothing to compare (one backend, or fewer than 3 usable repetitions).")
    failed = [c for c in cells if c.get("status") == "failed"]
    if failed:
        parts += ["", "## Failed cells", ""]
        parts += [f"- `{c['cell_id']}` {c['backend_name']} {c['load_label']} rep {c['repetition']}: {c.get('error')}"
                  for c in failed]
    invalid = [c for c in cells if c.get("invalid_reason")]
    if invalid:
        parts += ["", "## Invalid cells (kept, left out of aggregates)", ""]
        parts += [f"- `{c['cell_id']}` {c['backend_name']} {c['load_label']}: {c['invalid_reason']}" for c in invalid]
    parts += ["", "## Comparisons", "", table(CMP_HEADERS, comparison_table_rows(comparisons)) if comparisons else "none",
              "", "## Aggregates across repetitions", "", table(AGG_HEADERS, aggregate_table_rows(aggregates))]
    return "\n".join(parts) + "\n"


def render_text(campaign: dict[str, Any], cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                comparisons: list[dict[str, Any]]) -> str:
    """Terminal version: the same content with aligned plain-text tables."""
    counts = cell_counts(cells)
    lines = [f"campaign {campaign['id']} ({campaign.get('name', '')}): {campaign.get('status')} — "
             f"{counts['completed']}/{counts['total']} cells completed, {counts['failed']} failed, "
             f"{counts['invalid']} invalid", ""]
    for c in sort_rows(comparisons, "load_label", "metric", "candidate_ref"):
        if c.get("verdict") in ("better", "worse"):
            lines.append("  * " + verdict_sentence(c).replace("**", ""))
    for c in cells:
        if c.get("status") == "failed":
            lines.append(f"  ! failed {c['backend_name']} {c['load_label']} rep {c['repetition']}: {c.get('error')}")
    lines += ["", "Aggregates across repetitions:", render_table(aggregate_table_rows(aggregates), AGG_HEADERS, digits=3)]
    if comparisons:
        lines += ["", "Comparisons (candidate / baseline):", render_table(comparison_table_rows(comparisons), CMP_HEADERS, digits=3)]
    return "\n".join(lines) + "\n"


__all__ = ["render_markdown", "render_text", "verdict_sentence"]
