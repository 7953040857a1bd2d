"""The report's plain words: which backends failed or were invalid (first), then who wins by how
much, then what could not be compared and why. Pure functions of the stored rows.

Cells are ``cells`` rows (``status``, ``error``, ``invalid_reason``; a ``summary`` with ``invalid``
is read too); comparisons are ``comparisons`` rows (``verdict``, ``reason``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

DECIDED = ("better", "worse")
#: Cell statuses that are not failures.
NOT_FAILED = ("completed", "skipped", "pending", "running", "saturated")


def _first_line(text: str | None, limit: int = 300) -> str:
    """A multi-line error as one line (" — "-joined), cut at ``limit`` characters."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    one = " — ".join(lines)
    return one if len(one) <= limit else one[: limit - 1] + "…"


def is_failed(cell: dict[str, Any]) -> bool:
    return cell.get("status", "failed") not in NOT_FAILED


def invalid_cause(cell: dict[str, Any]) -> str | None:
    """Why a completed cell is invalid, or why a saturated one is left out (None when it is valid
    or did not complete)."""
    if cell.get("status") not in ("completed", "saturated"):
        return None
    return cell.get("invalid_reason") or (cell.get("summary") or {}).get("invalid") or None


def cell_counts(cells: list[dict[str, Any]]) -> dict[str, int]:
    """total / completed / valid / invalid / failed / skipped. A failed cell is never also counted
    as invalid: invalid counts completed cells with an invalid reason."""
    counts = {"total": len(cells), "completed": 0, "valid": 0, "invalid": 0, "failed": 0, "skipped": 0}
    for c in cells:
        status = c.get("status", "failed")
        if is_failed(c):
            counts["failed"] += 1
        elif status in counts:
            counts[status] += 1
        if status == "completed":
            counts["invalid" if invalid_cause(c) else "valid"] += 1
        elif status == "saturated":  # stopped early, kept and left out like an invalid cell
            counts["invalid"] += 1
    return counts


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def dominant(reasons: list[str]) -> tuple[str, int] | None:
    counts = Counter(_first_line(r) for r in reasons if _first_line(r))
    return counts.most_common(1)[0] if counts else None


def backend_problems(cells: list[dict[str, Any]]) -> list[str]:
    """One line per backend with failed cells, then one per backend with invalid cells."""
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by_backend.setdefault(c.get("backend_name", "?"), []).append(c)
    failed_lines, invalid_lines = [], []
    for name in sorted(by_backend, key=_natural):
        own = by_backend[name]
        failed = [c for c in own if is_failed(c)]
        invalid = [c for c in own if invalid_cause(c)]
        if failed:
            top = dominant([c.get("error") or "" for c in failed])
            cause = f": {top[0]}" + (f" ({top[1]} of them)" if 1 < top[1] < len(failed) else "") if top else ""
            failed_lines.append(f"**{name}** failed: {len(failed)} of {len(own)} cells failed{cause}.")
        if invalid:
            top = dominant([invalid_cause(c) or "" for c in invalid])
            cause = f": {top[0]}" + (f" ({top[1]} of them)" if 1 < top[1] < len(invalid) else "") if top else ""
            invalid_lines.append(f"**{name}** is invalid: {len(invalid)} of {len(own)} cells marked invalid and "
                                 f"left out of the comparison{cause}.")
    return failed_lines + invalid_lines


def _usable_backends(cells: list[dict[str, Any]]) -> list[str]:
    return sorted({c.get("backend_name", "?") for c in cells
                   if c.get("status") == "completed" and not invalid_cause(c)}, key=_natural)


def _nothing_to_compare(cells: list[dict[str, Any]]) -> str:
    backends = sorted({c.get("backend_name", "?") for c in cells}, key=_natural)
    usable = _usable_backends(cells)
    if len(backends) < 2:
        return "Nothing to compare: the campaign has one backend."
    if not usable:
        return (f"Nothing to compare: none of the {len(backends)} backends has a valid cell "
                "(see the failed and invalid backends above).")
    if len(usable) == 1:
        return f"Nothing to compare: only **{usable[0]}** has valid cells."
    return "Nothing to compare: the backends with valid cells share no load point."


def undecided_lines(comparisons: list[dict[str, Any]]) -> list[str]:
    """One line per (candidate, load, verdict, reason) without a decision, naming the metrics."""
    groups: dict[tuple, list[str]] = {}
    for c in comparisons:
        if c.get("verdict") in DECIDED or c.get("verdict") == "no significant difference":
            continue
        key = (c["candidate_ref"], c["baseline_ref"], c["load_label"], c.get("verdict"), c.get("reason"))
        groups.setdefault(key, []).append(c["metric"])
    lines = []
    for (cand, base, load, verdict, reason), metrics in sorted(groups.items(), key=lambda kv: _natural(str(kv[0]))):
        why = f": {reason}" if reason else ""
        lines.append(f"At {load}, {cand} vs {base} ({', '.join(metrics)}): {verdict or 'no verdict'}{why}.")
    return lines


def plain_words(cells: list[dict[str, Any]], comparisons: list[dict[str, Any]],
                decided_sentences: list[str]) -> list[str]:
    """The bullet lines of "In plain words" (without the leading "- ")."""
    lines = backend_problems(cells)
    lines += decided_sentences
    undecided_pairs = {(c["candidate_ref"], c["baseline_ref"]) for c in comparisons
                       if c.get("verdict") not in DECIDED and c.get("verdict") != "no significant difference"}
    compared = {(c["candidate_ref"], c["baseline_ref"]) for c in comparisons
                if c.get("verdict") == "no significant difference"}
    decided = {(c["candidate_ref"], c["baseline_ref"]) for c in comparisons if c.get("verdict") in DECIDED}
    for cand, base in sorted(compared - decided):
        lines.append(f"No significant difference between **{cand}** and **{base}** on any compared metric"
                     + (" that could be compared." if (cand, base) in undecided_pairs else "."))
    lines += undecided_lines(comparisons)
    if not comparisons:
        lines.append(_nothing_to_compare(cells))
    return lines
