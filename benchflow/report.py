"""The campaign report: plain words first (which backend is better at which load, by how much),
then the aggregate and comparison tables. Rendered as markdown for the Prefect UI and the
artifact store, and as plain text for the terminal.
"""

from __future__ import annotations

import re
from typing import Any

from benchflow import report_dynamic as rd
from benchflow import report_words as words
from benchflow import report_tables as rt
from benchflow.stats.keys import MetricKey
from benchflow.tables import format_change, format_estimate, metric_parts, render_table


def _metric_words(metric: str | MetricKey) -> str:
    name, stat = metric_parts(metric)
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
    ratio_text, ci_text = format_estimate(ratio, row.get("ci_low"), row.get("ci_high"))
    if row.get("ci_low") is not None:
        conf = _confidence(row)
        ci = f" (ratio {ratio_text}, {f'{conf * 100:g}% ' if conf else ''}CI {ci_text})"
    if verdict in ("better", "worse"):
        direction = "higher" if change > 0 else "lower"
        pct = format_change(ratio, row.get("ci_low"), row.get("ci_high")).split("%")[0].lstrip("+-")
        amount = f"{ratio_text}× as high" if ratio >= 2 else f"{pct}% {direction}"
        return f"At {load}, **{cand}** is {verdict} than **{base}** on {what}: {amount}{ci}."
    change_text = format_change(ratio, row.get("ci_low"), row.get("ci_high")).split(" (")[0]
    return f"At {load}, {cand} and {base} show {verdict or 'no verdict'} on {what} ({change_text}{ci})."


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    return render_table(rows, headers, markdown=True, digits=3)


def _natural(text: str) -> tuple:
    """Sort key that puts c4 before c16 and r2.5 before r10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def sort_rows(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(_natural(str(r.get(k, ""))) for k in keys))


#: Long-format table headers (the Prefect table artifacts); units are in the metric column.
AGG_HEADERS = rt.AGG_HEADERS
CMP_HEADERS = rt.CMP_HEADERS


def aggregate_table_rows(aggregates: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per (load, backend, metric), grouped by load point, rounded to the CI."""
    return rt.aggregate_long(aggregates)


def _confidence(c: dict[str, Any]) -> float | None:
    return c.get("confidence") or (c.get("detail") or {}).get("confidence")


def comparison_table_rows(comparisons: list[dict[str, Any]],
                          aggregates: list[dict[str, Any]] | None = None) -> list[list[Any]]:
    """One row per comparison with both means and the change with its CI."""
    return rt.comparison_long(comparisons, aggregates)


cell_counts = words.cell_counts


def _header_counts(counts: dict[str, int]) -> str:
    return (f"{counts['completed']} of {counts['total']} cells completed ({counts['valid']} valid, "
            f"{counts['invalid']} marked invalid), {counts['failed']} failed, {counts['skipped']} skipped")


def _decided(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sort_rows([c for c in comparisons if c.get("verdict") in words.DECIDED],
                     "load_label", "metric", "candidate_ref")


def render_markdown(campaign: dict[str, Any], cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                    comparisons: list[dict[str, Any]], *, backends: list[dict[str, Any]] | None = None) -> str:
    """The markdown report: the one-line answer, the setup, plain words, then the tables."""
    aggregates, capacities = rd.split_capacities(aggregates)
    counts = cell_counts(cells)
    parts = [f"# Campaign `{campaign['id']}` ({campaign.get('name', '')})", "",
             f"**{rt.one_line_answer(comparisons)}**", "",
             f"Status **{campaign.get('status', '?')}**: {_header_counts(counts)}.", ""]
    parts += ["## Setup", ""] + [f"- {line}" for line in rt.setup_lines(campaign, backends)] + [""]
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
    parts += rd.markdown_sections(cells, aggregates, capacities, table)
    parts += ["", "## Comparisons (candidate vs baseline)", "",
              table(CMP_HEADERS, comparison_table_rows(comparisons, aggregates)) if comparisons else "none",
              "", "## Results by load point (mean and 95% CI across repetitions)", ""]
    if aggregates:
        headers, rows = rt.aggregate_wide(aggregates)
        parts += [table(headers, rows), "", f"_{rt.TRUNCATION_NOTE}_"]
    else:
        parts.append("none")
    return "\n".join(parts) + "\n"


def render_text(campaign: dict[str, Any], cells: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                comparisons: list[dict[str, Any]], *, backends: list[dict[str, Any]] | None = None) -> str:
    """Terminal version: the same content with aligned plain-text tables."""
    aggregates, capacities = rd.split_capacities(aggregates)
    counts = cell_counts(cells)
    skipped = f", {counts['skipped']} skipped" if counts["skipped"] else ""
    lines = [rt.one_line_answer(comparisons), "",
             f"campaign {campaign['id']} ({campaign.get('name', '')}): {campaign.get('status')} — "
             f"{counts['completed']}/{counts['total']} cells completed, {counts['failed']} failed, "
             f"{counts['invalid']} invalid{skipped}"]
    lines += ["  " + line for line in rt.setup_lines(campaign, backends)] + [""]
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
    lines += rd.text_sections(cells, aggregates, capacities, render_table)
    if aggregates:
        headers, rows = rt.aggregate_wide(aggregates)
        lines += ["", "Results by load point (mean and 95% CI across repetitions):", render_table(rows, headers),
                  rt.TRUNCATION_NOTE]
    if comparisons:
        lines += ["", "Comparisons (candidate vs baseline):",
                  render_table(comparison_table_rows(comparisons, aggregates), CMP_HEADERS)]
    return "\n".join(lines) + "\n"


__all__ = ["aggregate_table_rows", "comparison_table_rows", "render_markdown", "render_text", "verdict_sentence"]
