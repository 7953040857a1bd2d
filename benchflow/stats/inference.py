"""Statistics across repetitions (METRICS.md, "Across repetitions"): aggregates (comparisons: stats.compare).

The unit is the cell: each repetition contributes one value per metric. Confidence intervals
are bootstrap intervals from ``scipy.stats.bootstrap`` with a fixed seed (BCa where it is
defined, percentile otherwise), with the t-interval beside them. With fewer than 3 values an
interval is undefined (``None``), never zero width. When every value is identical the
bootstrap has nothing to resample: the interval is the value itself with method ``"degenerate"``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from benchflow.stats.compare import (  # noqa: F401  (re-exported; comparisons live in stats.compare)
    BETTER, INSUFFICIENT, NO_DIFFERENCE, NOT_ENOUGH, WORSE, Comparison, compare, verdict)

logger = logging.getLogger(__name__)

MIN_N_FOR_CI = 3
DEFAULT_RESAMPLES = 9999


@dataclass(slots=True, frozen=True)
class Aggregate:
    """One metric across repetitions. ``dropped`` counts the None/NaN values left out."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    #: "bca", "percentile", "degenerate" (all values identical), or None (n < 3).
    ci_method: str | None
    t_low: float | None
    t_high: float | None
    confidence: float = 0.95
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean(values: Sequence[float | None]) -> tuple[np.ndarray, int]:
    """The finite values as floats, and how many None/NaN/inf were dropped."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(kept, dtype=float), len(values) - len(kept)


def _bootstrap_ci(data: tuple[np.ndarray, ...], statistic: Callable[..., Any], *, confidence: float,
                  seed: int, n_resamples: int, method: str) -> tuple[float, float, str] | None:
    """A bootstrap CI; BCa falls back to percentile when it is undefined. None if neither works."""
    methods = ["BCa", "percentile"] if method.lower() == "bca" else ["percentile"]
    for m in methods:
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            try:
                res = sps.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True,
                                    paired=False, axis=-1, confidence_level=confidence, method=m,
                                    rng=np.random.default_rng(seed))
            except (ValueError, FloatingPointError, ZeroDivisionError) as e:
                logger.debug("bootstrap %s failed: %s", m, e)
                continue
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        degenerate = any(issubclass(w.category, sps.DegenerateDataWarning) for w in caught)
        if math.isfinite(low) and math.isfinite(high) and not degenerate:
            return low, high, m.lower()
        logger.debug("bootstrap %s undefined for this data; trying the next method", m)
    return None


def _mean_stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def t_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean; None with fewer than 3 values."""
    if x.size < MIN_N_FOR_CI:
        return None
    sem = float(sps.sem(x))
    if sem == 0.0:  # zero spread: the interval is the mean itself
        return float(x.mean()), float(x.mean())
    low, high = sps.t.interval(confidence, df=x.size - 1, loc=float(x.mean()), scale=sem)
    return float(low), float(high)


def aggregate(values: Sequence[float | None], *, confidence: float = 0.95, seed: int = 0,
              n_resamples: int = DEFAULT_RESAMPLES, method: str = "bca") -> Aggregate:
    """n, mean, std (ddof=1), bootstrap CI of the mean and the t-interval, over repetitions."""
    x, dropped = clean(values)
    if dropped:
        logger.debug("aggregate: dropped %s missing or non-finite values", dropped)
    n = int(x.size)
    mean = float(x.mean()) if n else None
    std = float(x.std(ddof=1)) if n >= 2 else None
    ci, method_used = None, None
    if n >= MIN_N_FOR_CI:
        if np.all(x == x[0]):
            ci, method_used = (mean, mean), "degenerate"
        elif (found := _bootstrap_ci((x,), _mean_stat, confidence=confidence, seed=seed,
                                     n_resamples=n_resamples, method=method)) is not None:
            ci, method_used = found[:2], found[2]
    t_ci = t_interval(x, confidence)
    return Aggregate(
        n=n, mean=mean, std=std,
        ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, ci_method=method_used,
        t_low=t_ci[0] if t_ci else None, t_high=t_ci[1] if t_ci else None,
        confidence=confidence, dropped=dropped,
    )
