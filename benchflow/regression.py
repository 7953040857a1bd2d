"""Regression detection: a campaign against a baseline campaign of the same spec (pure; no Prefect).

For each (backend, load point, metric) present in both campaigns, the per-repetition values are
compared with :func:`benchflow.stats.compare` (ratio of means, candidate / baseline, with a
Welch interval of the log ratio; docs/metrics.md gives its measured false-alarm rate). A **regression** is a change for the worse whose CI lies wholly beyond the
tolerance (for a latency: ``ci_low > 1 + tolerance``; for a throughput: ``ci_high < 1 - tolerance``);
an **improvement** is the mirror image; anything else is **no change** (or **not enough
repetitions** with fewer than 2 usable repetitions on a side, **insufficient data** with none). The baseline is a pinned campaign of the same
name, else the last successful nightly of that name (:func:`find_baseline`).

Inputs are the rows of :func:`benchflow.campaign.analysis_input` (``{"backend_name",
"load_label", "status", "summary"}``); only completed cells that are not invalid count.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from benchflow import stats
from benchflow.analysis import group_values, unusable_reason
from benchflow.errors import BenchflowError
from benchflow.spec import RegressionSpec

log = logging.getLogger(__name__)

REGRESSION, IMPROVEMENT, NO_CHANGE, INSUFFICIENT = "regression", "improvement", "no change", "insufficient data"
NOT_ENOUGH = "not enough repetitions"
#: stats.compare verdict -> regression verdict.
_VERDICTS = {"worse": REGRESSION, "better": IMPROVEMENT, "no significant difference": NO_CHANGE,
             "not enough repetitions": NOT_ENOUGH}
DEFAULT_TOLERANCE: float = RegressionSpec.model_fields["tolerance"].default  # one definition: the spec's


@dataclass(frozen=True)
class Finding:
    """One (backend, load point, metric): this campaign against the baseline."""

    backend: str
    load_label: str
    metric: str
    verdict: str
    tolerance: float
    higher_is_better: bool
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    baseline_mean: float | None = None
    candidate_mean: float | None = None
    n_baseline: int = 0
    n_candidate: int = 0
    note: str | None = None
    n_needed: int | None = None
    method: str | None = None
    confidence: float | None = None

    @property
    def change_pct(self) -> float | None:
        return None if self.ratio is None else (self.ratio - 1.0) * 100.0

    def describe(self) -> str:
        """``a c4 ttft_ms.p99 +15.2% (95% CI +10.1%..+20.3%; tolerance ±5%)``."""
        head = f"{self.backend} {self.load_label} {self.metric}"
        if self.ratio is None:
            return f"{head}: {self.note or 'no data'}"
        ci = ""
        if self.ci_low is not None and self.ci_high is not None:
            ci = f"{_pct(self.confidence)} CI {(self.ci_low - 1) * 100:+.1f}%..{(self.ci_high - 1) * 100:+.1f}%; "
        return f"{head} {self.change_pct:+.1f}% ({ci}tolerance ±{self.tolerance * 100:g}%)"

    def to_row(self, baseline_campaign_id: str | None) -> dict[str, Any]:
        """A ``comparisons`` row of kind "regression" (extra keys land in its ``detail``)."""
        return {
            "kind": "regression", "baseline_ref": self.backend, "candidate_ref": self.backend,
            "load_label": self.load_label, "metric": self.metric, "ratio": self.ratio, "ci_low": self.ci_low,
            "ci_high": self.ci_high, "verdict": self.verdict, "tolerance": self.tolerance,
            "baseline_campaign_id": baseline_campaign_id, "ci_method": self.ci_method,
            "baseline_mean": self.baseline_mean, "candidate_mean": self.candidate_mean,
            "n_baseline": self.n_baseline, "n_candidate": self.n_candidate,
            "higher_is_better": self.higher_is_better, "method": self.method,
            "reason": self.note, "n_needed": self.n_needed, "confidence": self.confidence,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegressionReport:
    """Every finding of one campaign against one baseline."""

    campaign_id: str | None
    baseline_campaign_id: str | None
    findings: list[Finding] = field(default_factory=list)

    def _with(self, verdict: str) -> list[Finding]:
        return [f for f in self.findings if f.verdict == verdict]

    @property
    def regressions(self) -> list[Finding]:
        return self._with(REGRESSION)

    @property
    def improvements(self) -> list[Finding]:
        return self._with(IMPROVEMENT)

    @property
    def unchanged(self) -> list[Finding]:
        return self._with(NO_CHANGE)

    @property
    def insufficient(self) -> list[Finding]:
        """Findings without a decision: insufficient data or not enough repetitions."""
        return [f for f in self.findings if f.verdict in (INSUFFICIENT, NOT_ENOUGH)]

    def rows(self) -> list[dict[str, Any]]:
        """``comparisons`` rows (kind "regression") for the results database."""
        return [f.to_row(self.baseline_campaign_id) for f in self.findings]

    def message(self, limit: int = 10) -> str:
        """One line for a flow state: the regressions first, or that there are none."""
        regs = self.regressions
        if not regs:
            return (f"no regressions against {self.baseline_campaign_id} ({len(self.improvements)} improvements, "
                    f"{len(self.unchanged)} unchanged, {len(self.insufficient)} without enough data)")
        shown = "; ".join(f.describe() for f in regs[:limit]) + (" …" if len(regs) > limit else "")
        return f"{len(regs)} regression(s) against baseline {self.baseline_campaign_id}: {shown}"

    def to_markdown(self, title: str | None = None) -> str:
        """The keyed artifact: regressions, improvements and no change, each as a table."""
        lines = [f"# {title or 'Regression check'}", "",
                 f"Campaign `{self.campaign_id}` against baseline `{self.baseline_campaign_id}`. A change counts "
                 "only when the CI of the ratio (this run / baseline; Welch interval of the log ratio, see "
                 "docs/metrics.md) lies wholly beyond the tolerance.", ""]
        for heading, group in (("Regressions", self.regressions), ("Improvements", self.improvements),
                               ("No change", self.unchanged), ("Not enough data", self.insufficient)):
            lines += [f"## {heading} ({len(group)})", ""]
            if group:
                lines += _markdown_table(group)
            else:
                lines.append("None.")
            lines.append("")
        return "\n".join(lines)


def _pct(confidence: float | None) -> str:
    return f"{(confidence or 0.95) * 100:g}%"


def _markdown_table(findings: Sequence[Finding]) -> list[str]:
    from benchflow.report import table

    def fmt(v: float | None, pct: bool = False) -> str:
        if v is None:
            return "—"
        return f"{(v - 1) * 100:+.1f}%" if pct else f"{v:.4g}"

    rows = [[f.backend, f.load_label, f.metric, fmt(f.baseline_mean), fmt(f.candidate_mean), fmt(f.ratio, True),
             f"{fmt(f.ci_low, True)} .. {fmt(f.ci_high, True)}", f"±{f.tolerance * 100:g}%",
             f"{f.n_baseline}/{f.n_candidate}", f.note or ""]
            for f in findings]
    headers = ["backend", "load", "metric", "baseline", "this run", "change", "CI", "tolerance", "n (base/run)",
               "note"]
    return [table(headers, rows)]


def tolerance_for(metric: str, tolerance: float = DEFAULT_TOLERANCE,
                  tolerances: Mapping[str, float] | None = None) -> float:
    """The metric's own tolerance when it has one, else the common one."""
    return float((tolerances or {}).get(metric, tolerance))


def compare_values(baseline: Sequence[float], candidate: Sequence[float], *, metric: str, tolerance: float,
                   seed: int = 0, **compare_kwargs: Any) -> dict[str, Any]:
    """The verdict of one metric: stats.compare mapped to regression / improvement / no change."""
    higher = stats.higher_is_better(metric)
    cmp = stats.compare(baseline, candidate, higher_is_better=higher, tolerance=tolerance, **compare_kwargs)
    return {"verdict": _VERDICTS.get(cmp.verdict, INSUFFICIENT), "tolerance": tolerance, "higher_is_better": higher,
            "ratio": cmp.ratio, "ci_low": cmp.ci_low, "ci_high": cmp.ci_high, "ci_method": cmp.ci_method,
            "baseline_mean": cmp.baseline_mean, "candidate_mean": cmp.candidate_mean,
            "n_baseline": cmp.n_baseline, "n_candidate": cmp.n_candidate, "note": cmp.note,
            "n_needed": cmp.n_needed, "method": cmp.method, "confidence": cmp.confidence}


def detect(baseline_rows: Sequence[Mapping[str, Any]], candidate_rows: Sequence[Mapping[str, Any]], *,
           metrics: Sequence[str], tolerance: float = DEFAULT_TOLERANCE,
           tolerances: Mapping[str, float] | None = None, seed: int = 0, campaign_id: str | None = None,
           baseline_campaign_id: str | None = None, **compare_kwargs: Any) -> RegressionReport:
    """Compares every (backend, load point, metric) of the baseline with this campaign.

    A key the baseline has but this campaign lacks (its cells all failed or were invalid) is
    reported as insufficient data; keys only this campaign has (a new backend) are skipped.
    ``compare_kwargs`` go to :func:`stats.compare` (``confidence``).
    """
    base = group_values(list(baseline_rows), list(metrics))
    cand = group_values(list(candidate_rows), list(metrics))
    findings = []
    for (backend, load, metric), base_values in sorted(base.items()):
        tol = tolerance_for(metric, tolerance, tolerances)
        values = cand.get((backend, load, metric))
        if values is None:
            has_cells = any(r["backend_name"] == backend and r["load_label"] == load for r in candidate_rows)
            note = unusable_reason(list(candidate_rows), backend, load) if has_cells else "no cells in this run"
            findings.append(Finding(backend, load, metric, INSUFFICIENT, tol, stats.higher_is_better(metric),
                                    n_baseline=len(base_values), note=note))
            continue
        found = compare_values(base_values, values, metric=metric, tolerance=tol, seed=seed, **compare_kwargs)
        findings.append(Finding(backend=backend, load_label=load, metric=metric, **found))
    report = RegressionReport(campaign_id, baseline_campaign_id, findings)
    log.info("regression check of %s against %s: %d regressions, %d improvements, %d unchanged, %d insufficient",
             campaign_id, baseline_campaign_id, len(report.regressions), len(report.improvements),
             len(report.unchanged), len(report.insufficient))
    return report


class CampaignLookup(Protocol):
    """The part of ``ResultStore`` that :func:`find_baseline` reads."""

    def get_campaign(self, campaign_id: str) -> dict[str, Any] | None: ...

    def pinned_baseline(self, name: str) -> dict[str, Any] | None: ...

    def latest_campaign(self, *, name: str | None = None, status: str | None = "completed",
                        kind: str | None = None, before: datetime | None = None,
                        exclude_id: str | None = None) -> dict[str, Any] | None: ...


class BaselineNotFoundError(BenchflowError):
    """An explicitly requested baseline campaign does not exist."""


def find_baseline(store: CampaignLookup, name: str, campaign_id: str, *, policy: str = "auto",
                  explicit_id: str | None = None, kind: str = "nightly",
                  before: datetime | None = None) -> dict[str, Any] | None:
    """The campaign to compare ``campaign_id`` with, or None when there is none yet.

    ``explicit_id`` wins. ``policy`` "auto": the pinned baseline of ``name``, else the last
    completed campaign of that name and ``kind`` created before ``before``; "pinned": only a
    pinned one; "previous": only the last completed one. The campaign itself never counts.
    """
    if explicit_id:
        found = store.get_campaign(explicit_id)
        if found is None:
            raise BaselineNotFoundError(f"baseline campaign {explicit_id!r} does not exist")
        return found
    if policy in ("auto", "pinned"):
        pinned = store.pinned_baseline(name)
        if pinned is not None and pinned.get("id") != campaign_id:
            return pinned
        if policy == "pinned":
            return None
    return store.latest_campaign(name=name, status="completed", kind=kind, before=before, exclude_id=campaign_id)


def regression_settings(spec: Any) -> dict[str, Any]:
    """metrics, tolerance, tolerances and baseline policy of a spec (its ``regression`` section,
    falling back on ``compare.metrics`` and the default tolerance)."""
    from benchflow.analysis import metrics_of

    section = getattr(spec, "regression", None)
    metrics = list(getattr(section, "metrics", None) or metrics_of(spec))
    return {
        "metrics": metrics,
        "tolerance": float(getattr(section, "tolerance", DEFAULT_TOLERANCE)),
        "tolerances": dict(getattr(section, "tolerances", None) or {}),
        "policy": str(getattr(section, "baseline", "auto")),
    }
