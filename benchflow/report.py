"""The campaign report: plain words first (which backend is better at which load, by how much),
then the aggregate and comparison tables. Rendered as markdown for the Prefect UI and the
artifact store, and as plain text for the terminal.
"""

from __future__ import annotations

import re
from typing import Any

from benchflow import report_words as words
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
    what = _metric_words(metric)
    if ratio is None or row.get("verdict") not in ("better", "worse", "no significant difference"):
        reason = f": {row['reason']}" if row.get("reason") else ""
        return f"At {load}, {cand} vs {base} on {what}: {row.get('verdict') or 'not enough data'}{reason}."
    verdict = row.get("verdict")
    change = (ratio - 1.0) * 100
    ci = ""
    if row.get("ci_low") is not None:
        conf = _confidence(row)
        ci = f" (ratio {ratio:.3f}, {f'{conf * 100:g}% ' if conf else ''}CI {row['ci_low']:.3f}–{row['ci_high']:.3f})"
    if verdict in ("better", "worse"):
        direction = "higher" if change > 0 else "lower"
        amount = f"{ratio:.1f}× as high" if ratio >= 2 else f"{abs(change):.1f}% {direction}"
        return f"At {load}, **{cand}** is {verdict} than **{base}** on {what}: {amount}{ci}."
    return f"At {load}, {cand} and {base} show {verdict or 'no verdict'} on {what} ({change:+.1f}%{ci})."


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    return render_table(rows, headers, markdown=True, digits=3)


def _natural(text: str) -> tuple:
    """Sort key that puts c4 before c16 and r2.5 before r10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def sort_rows(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(_natural(str(r.get(k, ""))) for k in keys))


AGG_HEADERS = ["backend", "load", "metric", "n", "mean", "std", "95% CI (bootstrap)", "95% CI (t)"]
CMP_HEADERS = ["load", "metric", "baseline", "candidate", "ratio", "CI", "verdict", "reason"]


def aggregate_table_rows(aggregates: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for a in sort_rows(aggregates, "backend_name", "load_label", "metric"):
        boot = "undefined (n<3)" if a.get("ci_low") is None else f"{a['ci_low']:.3f}–{a['ci_high']:.3f} ({a.get('ci_method')})"
        tint = "undefined" if a.get("t_low") is None else f"{a['t_low']:.3f}–{a['t_high']:.3f}"
        out.append([a["backend_name"], a["load_label"], a["metric"], a["n"], a.get("mean"), a.get("std"), boot, tint])
    return out


def _confidence(c: dict[str, Any]) -> float | None:
    return c.get("confidence") or (c.get("detail") or {}).get("confidence")


def comparison_table_rows(comparisons: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for c in sort_rows(comparisons, "load_label", "metric", "candidate_ref"):
        conf = _confidence(c)
        ci = "—" if c.get("ci_low") is None else (f"{c['ci_low']:.3f}–{c['ci_high']:.3f}"
                                                   + (f" ({conf * 100:g}%)" if conf else ""))
        out.append([c["load_label"], c["metric"], c["baseline_ref"], c["candidate_ref"], c.get("ratio"), ci,
                    c.get("verdict"), c.get("reason") or ""])
    return out


cell_counts = words.cell_counts


def _header_counts(counts: dict[str, int]) -> str:
    return (f"{counts['completed']} of {counts['total']} cells completed ({counts['valid']} valid, "
            f"{counts['invalid']} marked invalid), {counts['failed']} failed, {counts['skipped']} skipped")


def _decided(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sort_rows([c for c in comparisons if c.get("verdict") in words.DECIDED],
                     "load_label", "metric", "candidate_ref")


def render_markdown(campaign: dict[str, Any], cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                    comparisons: list[dict[str, Any]]) -> str:
    counts = cell_counts(cells)
    parts = [f"# Campaign `{campaign['id']}` ({campaign.get('name', '')})", "",
             f"Status **{campaign.get('status', '?')}**: {_header_counts(counts)}.", ""]
    sentences = [verdict_sentence(c) for c in _decided(comparisons)]
    parts += ["## In plain words", ""]
    parts += [f"- {line}" for line in words.plain_words(cells, comparisons, sentences)]
    failed = [c for c in cells if words.is_failed(c)]
    if failed:
        parts += ["", "## Failed cells", ""]
        parts += [f"- `{c['cell_id']}` {c['backend_name']} {c['load_label']} rep {c.get('repetition')}: "
                  f"{words._first_line(c.get('error')) or c.get('status')}" for c in failed]
    invalid = [c for c in cells if words.invalid_cause(c)]
    if invalid:
        parts += ["", "## Invalid cells (kept, left out of aggregates)", ""]
        parts += [f"- `{c['cell_id']}` {c['backend_name']} {c['load_label']} rep {c.get('repetition')}: "
                  f"{words.invalid_cause(c)}" for c in invalid]
    parts += ["", "## Comparisons", "", table(CMP_HEADERS, comparison_table_rows(comparisons)) if comparisons else "none",
              "", "## Aggregates across repetitions", "",
              table(AGG_HEADERS, aggregate_table_rows(aggregates)) if aggregates else "none"]
    return "\n".join(parts) + "\n"


def render_text(campaign: dict[str, Any], cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                comparisons: list[dict[str, Any]]) -> str:
    """Terminal version: the same content with aligned plain-text tables."""
    counts = cell_counts(cells)
    skipped = f", {counts['skipped']} skipped" if counts["skipped"] else ""
    lines = [f"campaign {campaign['id']} ({campaign.get('name', '')}): {campaign.get('status')} — "
             f"{counts['completed']}/{counts['total']} cells completed, {counts['failed']} failed, "
             f"{counts['invalid']} invalid{skipped}", ""]
    sentences = [verdict_sentence(c) for c in _decided(comparisons)]
    lines += ["  * " + line.replace("**", "") for line in words.plain_words(cells, comparisons, sentences)]
    for c in cells:
        if words.is_failed(c):
            lines.append(f"  ! failed {c['backend_name']} {c['load_label']} rep {c.get('repetition')}: "
                         f"{words._first_line(c.get('error')) or c.get('status')}")
    for c in cells:
        if words.invalid_cause(c):
            lines.append(f"  ! invalid {c['backend_name']} {c['load_label']} rep {c.get('repetition')}: "
                         f"{words.invalid_cause(c)}")
    if aggregates:
        lines += ["", "Aggregates across repetitions:",
                  render_table(aggregate_table_rows(aggregates), AGG_HEADERS, digits=3)]
    if comparisons:
        lines += ["", "Comparisons (candidate / baseline):",
                  render_table(comparison_table_rows(comparisons), CMP_HEADERS, digits=3)]
    return "\n".join(lines) + "\n"


__all__ = ["render_markdown", "render_text", "verdict_sentence"]
