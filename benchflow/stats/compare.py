"""Comparison of two backends across repetitions (METRICS.md, "Across repetitions").

The ratio of means, candidate / baseline, gets a Welch interval on the log scale: by the delta
method ``var(log mean) ~= s^2 / (n * mean^2)``, so ``se(log ratio) = sqrt(cv_b^2/n_b + cv_c^2/n_c)``
(``cv`` = standard deviation / mean), with Welch–Satterthwaite degrees of freedom. The interval
is ``ratio * exp(+-t * se)``. Unlike a bootstrap of three numbers (whose intervals are far too
narrow: 18.5% false verdicts at n = 3), its false-verdict rate on identical backends stays
about 2% at n = 2, 3, 5 and 10 with the default 97.5% interval (:data:`CONFIDENCE`);
``bench/verdicts.py`` measures it on the simulator. The verdict is ``better``/``worse`` only when the interval lies wholly outside
``1 +- tolerance``.

With fewer than 2 values on a side, or an interval that is undefined (a mean <= 0), there is
nothing honest to say: the verdict is :data:`NOT_ENOUGH` (or :data:`INSUFFICIENT` when there is
no data at all), with the reason in ``note`` and, where the observed spread allows it, the
repetitions per side (``n_needed``) that would detect a real difference of 5% beyond the
tolerance with 80% power.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

logger = logging.getLogger(__name__)

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
INSUFFICIENT, NOT_ENOUGH = "insufficient data", "not enough repetitions"
#: The comparison method, stored with each comparison row.
METHOD = "welch-log-ratio"
MIN_N_FOR_COMPARISON = 2
#: Confidence of the verdict's interval. 97.5% (1.25% each way), not 95%: a test at exactly 5%
#: would exceed 5% false verdicts in about half of all 200-pair A/A measurements; this one
#: measures about 2% (docs/metrics.md), at a modest cost in power.
CONFIDENCE = 0.975
#: The real change that ``n_needed`` is sized for, beyond the tolerance; and the power.
DETECT_CHANGE, POWER = 0.05, 0.80
MAX_N_NEEDED = 10_000


@dataclass(slots=True, frozen=True)
class Comparison:
    """Candidate versus baseline: ``ratio`` = mean(candidate) / mean(baseline), with its CI."""

    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str | None
    #: "better", "worse", "no significant difference", "not enough repetitions" or "insufficient data".
    verdict: str
    higher_is_better: bool
    tolerance: float
    n_baseline: int
    n_candidate: int
    baseline_mean: float | None
    candidate_mean: float | None
    confidence: float = CONFIDENCE
    #: Why the verdict is "not enough repetitions"/"insufficient data" (or another caveat).
    note: str | None = None
    #: Repetitions per side that would detect a real change of 5% beyond the tolerance with 80% power.
    n_needed: int | None = None
    method: str = METHOD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=float)


def verdict(ci_low: float, ci_high: float, *, higher_is_better: bool, tolerance: float = 0.0) -> str:
    """"better"/"worse" when the ratio's CI lies wholly outside 1 +- tolerance, else no significant difference."""
    above, below = ci_low > 1.0 + tolerance, ci_high < 1.0 - tolerance
    if above:
        return BETTER if higher_is_better else WORSE
    if below:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


def _rel_var(x: np.ndarray) -> float:
    """Squared coefficient of variation (ddof=1)."""
    return float(np.var(x, ddof=1) / np.mean(x) ** 2)


def welch_log_ratio(b: np.ndarray, c: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(ci_low, ci_high, df) of mean(c)/mean(b) by the delta method on the log scale. Needs
    n >= 2 and a positive mean on both sides; a zero spread on both sides gives a zero-width CI."""
    ratio = float(np.mean(c) / np.mean(b))
    vb, vc = _rel_var(b) / b.size, _rel_var(c) / c.size
    se2 = vb + vc
    if se2 == 0.0:
        return ratio, ratio, math.inf
    df = se2 ** 2 / (vb ** 2 / (b.size - 1) + vc ** 2 / (c.size - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    return ratio * math.exp(-half), ratio * math.exp(half), df


def repetitions_needed(rel_var: float, *, tolerance: float = 0.0, change: float = DETECT_CHANGE,
                       power: float = POWER, confidence: float = CONFIDENCE) -> int | None:
    """Repetitions per side so that a real change of ``tolerance + change`` gives a CI clear of
    ``1 + tolerance`` with probability ``power`` (squared CV per repetition ``rel_var``, both sides
    alike). None when ``rel_var`` is unknown; 2 when the spread is zero."""
    if rel_var is None or not math.isfinite(rel_var):
        return None
    d = math.log1p(tolerance + change) - math.log1p(tolerance)
    z = sps.norm.ppf(0.5 + confidence / 2) + sps.norm.ppf(power)
    start = max(MIN_N_FOR_COMPARISON, min(MAX_N_NEEDED, math.floor(2 * rel_var * (z / d) ** 2)))
    for n in range(start, MAX_N_NEEDED + 1):  # t quantiles exceed z ones: the answer is >= start
        df = 2 * n - 2
        q = sps.t.ppf(0.5 + confidence / 2, df) + sps.t.ppf(power, df)
        if q * math.sqrt(2 * rel_var / n) <= d:
            return n
    return MAX_N_NEEDED


def _pooled_rel_var(*sides: np.ndarray) -> float | None:
    usable = [_rel_var(x) for x in sides if x.size >= 2 and np.mean(x) > 0]
    return float(np.mean(usable)) if usable else None


def compare(baseline: Sequence[float | None], candidate: Sequence[float | None], *, higher_is_better: bool,
            tolerance: float = 0.0, confidence: float = CONFIDENCE, **_ignored: Any) -> Comparison:
    """Ratio of means candidate/baseline with a Welch log-scale CI and a verdict.

    ``**_ignored`` accepts the former bootstrap options (``seed``, ``n_resamples``, ``method``).
    """
    b, c = clean(baseline), clean(candidate)
    b_mean = float(b.mean()) if b.size else None
    c_mean = float(c.mean()) if c.size else None
    ratio = c_mean / b_mean if b_mean and c_mean is not None else None
    rel_var = _pooled_rel_var(b, c)
    needed = repetitions_needed(rel_var, tolerance=tolerance, confidence=confidence) if rel_var is not None else None

    def result(verdict_: str, ci: tuple[float, float] | None = None, note: str | None = None) -> Comparison:
        return Comparison(
            ratio=ratio, ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None,
            ci_method=METHOD if ci else None, verdict=verdict_, higher_is_better=higher_is_better,
            tolerance=tolerance, n_baseline=int(b.size), n_candidate=int(c.size), baseline_mean=b_mean,
            candidate_mean=c_mean, confidence=confidence, note=note, n_needed=needed,
        )

    if b.size == 0 or c.size == 0:
        side = "baseline" if b.size == 0 else "candidate"
        return result(INSUFFICIENT, note=f"no usable repetitions of the {side}")
    if b.size < MIN_N_FOR_COMPARISON or c.size < MIN_N_FOR_COMPARISON:
        need = f"about {needed} per side" if needed is not None else f"at least {MIN_N_FOR_COMPARISON} per side"
        return result(NOT_ENOUGH, note=f"{b.size} baseline and {c.size} candidate repetitions; need {need}")
    if b_mean is None or c_mean is None or b_mean <= 0 or c_mean <= 0:
        return result(INSUFFICIENT, note="a mean is zero or negative, so the ratio's interval is undefined")
    low, high, _df = welch_log_ratio(b, c, confidence)
    found = verdict(low, high, higher_is_better=higher_is_better, tolerance=tolerance)
    note = None
    if found == NO_DIFFERENCE and needed is not None and needed > min(b.size, c.size):
        note = (f"{min(b.size, c.size)} repetitions cannot rule out a {(tolerance + DETECT_CHANGE) * 100:g}% "
                f"change; about {needed} per side would detect one with {POWER:.0%} power")
    return result(found, (low, high), note)
