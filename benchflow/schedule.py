"""Open-loop send schedules: pure functions from (rate, arrival, seed) to send times.

The schedule is computed completely before the first request is sent, and the load generator
then sends at those times (timing policy kept apart from execution). Everything here is
deterministic for a given seed and needs no network, so it is tested on its own.

Arrival processes (``rate`` in requests per second):

- ``poisson``: exponential gaps with mean ``1/rate``;
- ``gamma``: gamma gaps with shape ``burstiness`` and mean ``1/rate`` (coefficient of variation
  ``1/sqrt(burstiness)``; ``burstiness=1`` is Poisson, below 1 is burstier, above 1 smoother);
- ``constant``: gaps of exactly ``1/rate``.

The first request is sent at offset 0.
"""

from __future__ import annotations

import math

import numpy as np

from benchflow.errors import SpecError

__all__ = ["ARRIVALS", "interarrival_s", "send_offsets_s", "send_offsets_ns"]

ARRIVALS = ("poisson", "gamma", "constant")

#: Safety cap on the length of a duration-bounded schedule.
_MAX_SCHEDULE = 50_000_000


def _check(rate: float, arrival: str, burstiness: float) -> None:
    problems = []
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        problems.append(f"rate: must be a positive finite number, got {rate!r}")
    if arrival not in ARRIVALS:
        problems.append(f"arrival: must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    if not (math.isfinite(burstiness) and burstiness > 0):
        problems.append(f"burstiness: must be a positive finite number, got {burstiness!r}")
    if problems:
        raise SpecError(problems)


def interarrival_s(
    n: int, rate: float, arrival: str = "poisson", *, burstiness: float = 1.0,
    rng: np.random.Generator | None = None, seed: int = 0,
) -> np.ndarray:
    """``n`` gaps between consecutive sends, in seconds (float64 array)."""
    _check(rate, arrival, burstiness)
    if n < 0:
        raise SpecError(f"n: must be >= 0, got {n}")
    if arrival == "constant":
        return np.full(n, 1.0 / rate)
    rng = rng if rng is not None else np.random.default_rng(seed)
    if arrival == "poisson":
        return rng.exponential(1.0 / rate, size=n)
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)


def send_offsets_s(
    rate: float, arrival: str = "poisson", *, n: int | None = None, duration_s: float | None = None,
    burstiness: float = 1.0, seed: int = 0,
) -> np.ndarray:
    """Send times in seconds after the start of the run, first at 0, non-decreasing.

    Gives ``n`` sends when ``n`` is set; with ``duration_s`` only the sends at offsets
    ``<= duration_s``; with both, whichever bound is reached first.
    """
    _check(rate, arrival, burstiness)
    if n is None and duration_s is None:
        raise SpecError("an open-loop schedule needs a number of requests or a duration")
    if n is not None and n < 0:
        raise SpecError(f"n: must be >= 0, got {n}")
    if duration_s is not None and not duration_s >= 0:
        raise SpecError(f"duration_s: must be >= 0, got {duration_s!r}")
    if n is not None:
        offsets = _offsets(n, rate, arrival, burstiness, np.random.default_rng(seed))
    else:
        offsets = _offsets_for_duration(duration_s, rate, arrival, burstiness, seed)
    if duration_s is not None:
        offsets = offsets[: int(np.searchsorted(offsets, duration_s, side="right"))]
    return offsets


def send_offsets_ns(
    rate: float, arrival: str = "poisson", *, n: int | None = None, duration_s: float | None = None,
    burstiness: float = 1.0, seed: int = 0,
) -> list[int]:
    """:func:`send_offsets_s` as integer nanoseconds (the load generator's clock unit)."""
    offsets = send_offsets_s(rate, arrival, n=n, duration_s=duration_s, burstiness=burstiness, seed=seed)
    return np.rint(offsets * 1e9).astype(np.int64).tolist()


def _offsets(n: int, rate: float, arrival: str, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    if n == 0:
        return np.zeros(0)
    if arrival == "constant":
        return np.arange(n) / rate  # exact multiples; a running sum would drift
    gaps = interarrival_s(n - 1, rate, arrival, burstiness=burstiness, rng=rng)
    return np.concatenate(([0.0], np.cumsum(gaps)))


def _offsets_for_duration(duration_s: float, rate: float, arrival: str, burstiness: float, seed: int) -> np.ndarray:
    # Draw a generous number up front; if the draw fell short (very unlikely), draw again with
    # twice as many. Depends only on the seed, so the schedule is reproducible.
    expected = rate * duration_s
    n = int(expected + 8 * math.sqrt(expected / min(burstiness, 1.0)) + 16)
    while True:
        offsets = _offsets(n, rate, arrival, burstiness, np.random.default_rng(seed))
        if offsets[-1] > duration_s or n >= _MAX_SCHEDULE:
            return offsets
        n *= 2
