"""Early stop on over-saturation: is an open-loop cell's server still keeping up?

A pure detector over a time series, with no clock, no I/O and no Prefect, so that the live load
generator (:mod:`benchflow.load_watch`) and a virtual-time replay (:func:`samples_from_timings`,
fed from :mod:`benchflow.sim.virtual`) run the same code.

It is fed one :class:`Sample` at a time: the seconds since the measured phase began, the number
of requests *outstanding* (sent or waiting in the client's own queue, and not yet ended), and the
``(queued_at_s, ttft_s)`` of each request whose first output token arrived since the previous
sample (TTFT counted from when the request was due, so that the client's queue counts too).

When the offered rate exceeds what the server serves, the backlog grows linearly: the
outstanding count grows without bound and every new request waits longer for its first token.
Below capacity both stay level (Little's law). The detector declares saturation when, for
``confirm_s`` seconds of consecutive checks, BOTH hold:

* TTFT rises steadily: the least-squares slope of TTFT against send time is at least
  ``min_ttft_slope`` with a lower ``confidence`` bound above 0, and the median TTFT of the latest
  tenth of requests is at least ``1 + ttft_rise`` times that of the first tenth. The slope has no
  unit (seconds of wait per second of load): past capacity the backlog grows by λ − μ requests a
  second, so a request sent at t waits (λ − μ) t / μ and the slope is the overload λ/μ − 1 (1 at
  twice the capacity). Bursts below capacity raise TTFT for a while, but not at this slope;
* the outstanding count grows: its slope against time has a lower bound above 0, and its mean over
  the last third of the window is at least ``in_flight_growth`` times (and ``min_in_flight_growth``
  requests above) its mean over the first third.

Nothing is decided before ``min_seconds`` of the measured phase and ``min_requests`` first tokens.
The verdict carries the evidence: both slopes with their intervals and the outstanding series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SaturationConfig", "Sample", "SaturationDetector", "describe", "samples_from_timings", "slope_interval",
           "EVIDENCE_POINTS"]

#: The outstanding series in the evidence is thinned to at most this many points.
EVIDENCE_POINTS = 60


@dataclass(frozen=True, slots=True)
class SaturationConfig:
    """The detector's knobs (the spec's ``limits.saturation``; defaults documented there)."""

    enabled: bool = True
    min_seconds: float = 10.0
    min_requests: int = 20
    ttft_rise: float = 1.0
    min_ttft_slope: float = 0.1
    in_flight_growth: float = 2.0
    min_in_flight_growth: float = 4.0
    confidence: float = 0.99
    confirm_s: float = 3.0
    #: The detector evaluates at most this often (a live watch samples faster).
    check_every_s: float = 1.0

    @classmethod
    def of(cls, spec: Any) -> SaturationConfig:
        """From a ``SaturationSpec``-like object or mapping (``None``: the defaults)."""
        if spec is None:
            return cls()
        get = spec.get if isinstance(spec, dict) else lambda k, d=None: getattr(spec, k, d)
        return cls(**{k: get(k) for k in cls.__dataclass_fields__ if get(k) is not None})


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of the live load: see the module docstring."""

    t_s: float
    outstanding: int
    first_tokens: Sequence[tuple[float, float]] = ()


def slope_interval(x: Sequence[float], y: Sequence[float], confidence: float) -> dict[str, float] | None:
    """Least-squares slope of ``y`` on ``x`` with its two-sided t interval; ``None`` below 3 points
    or without spread in ``x``. (Points of a queue are autocorrelated, so the interval is a
    screen, not an exact test; the level criteria guard against small drifts.)"""
    from scipy import stats as sps

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = xs.size
    if n < 3:
        return None
    dx = xs - xs.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return None
    slope = float(dx @ (ys - ys.mean())) / sxx
    resid = ys - ys.mean() - slope * dx
    se = math.sqrt(float(resid @ resid) / (n - 2) / sxx)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 2)) * se
    return {"value": slope, "ci_low": slope - half, "ci_high": slope + half, "confidence": confidence, "n": int(n)}


@dataclass
class SaturationDetector:
    """Feed it :class:`Sample` s in time order; :meth:`observe` returns the evidence once saturated."""

    config: SaturationConfig = field(default_factory=SaturationConfig)
    _t: list[float] = field(default_factory=list)
    _n: list[int] = field(default_factory=list)
    _sent: list[float] = field(default_factory=list)
    _ttft: list[float] = field(default_factory=list)
    _last_check: float = -math.inf
    _since: float | None = None
    verdict: dict[str, Any] | None = None

    def observe(self, sample: Sample) -> dict[str, Any] | None:
        """Records ``sample``; returns the evidence when saturation is confirmed (and from then on)."""
        if self.verdict is not None or not self.config.enabled:
            return self.verdict
        self._t.append(sample.t_s)
        self._n.append(sample.outstanding)
        for sent, ttft in sample.first_tokens:
            self._sent.append(sent)
            self._ttft.append(ttft)
        if sample.t_s - self._last_check < self.config.check_every_s:
            return None
        self._last_check = sample.t_s
        evidence = self.evidence()
        if evidence is None or not evidence["saturated_now"]:
            self._since = None
            return None
        if self._since is None:
            self._since = sample.t_s
        if sample.t_s - self._since >= self.config.confirm_s:
            evidence["confirmed_for_s"] = round(sample.t_s - self._since, 3)
            self.verdict = evidence
        return self.verdict

    def evidence(self) -> dict[str, Any] | None:
        """The current readings (``saturated_now`` says whether both criteria hold); ``None``
        before ``min_seconds`` and ``min_requests``."""
        c = self.config
        if not self._t or self._t[-1] < c.min_seconds or len(self._ttft) < c.min_requests:
            return None
        ttft = self._ttft_reading()
        flight = self._in_flight_reading()
        if ttft is None or flight is None:
            return None
        rising = (ttft["slope_s_per_s"]["ci_low"] > 0 and ttft["slope_s_per_s"]["value"] >= c.min_ttft_slope
                  and ttft["recent_ms"] >= (1 + c.ttft_rise) * max(ttft["early_ms"], 1.0))
        growing = (flight["slope_per_s"]["ci_low"] > 0
                   and flight["recent"] >= c.in_flight_growth * max(flight["early"], 1.0)
                   and flight["recent"] - flight["early"] >= c.min_in_flight_growth)
        return {"saturated_now": bool(rising and growing), "at_s": round(self._t[-1], 3),
                "ttft_rising": bool(rising), "in_flight_growing": bool(growing), "ttft": ttft, "in_flight": flight,
                "config": {k: getattr(c, k) for k in c.__dataclass_fields__}}

    def _ttft_reading(self) -> dict[str, Any] | None:
        order = np.argsort(self._sent, kind="stable")
        sent = np.asarray(self._sent)[order]
        ttft = np.asarray(self._ttft)[order]
        slope = slope_interval(sent, ttft, self.config.confidence)
        if slope is None:
            return None
        tenth = max(5, len(ttft) // 10)
        return {"slope_s_per_s": _rounded(slope), "early_ms": float(np.median(ttft[:tenth])) * 1e3,
                "recent_ms": float(np.median(ttft[-tenth:])) * 1e3, "requests": int(len(ttft))}

    def _in_flight_reading(self) -> dict[str, Any] | None:
        t, n = np.asarray(self._t), np.asarray(self._n, dtype=float)
        slope = slope_interval(t, n, self.config.confidence)
        if slope is None:
            return None
        third = max(1, len(n) // 3)
        step = max(1, math.ceil(len(t) / EVIDENCE_POINTS))
        series = [[round(float(a), 3), int(b)] for a, b in zip(t[::step], n[::step])]
        if series[-1][0] != round(float(t[-1]), 3):
            series.append([round(float(t[-1]), 3), int(n[-1])])
        return {"slope_per_s": _rounded(slope), "early": float(n[:third].mean()), "recent": float(n[-third:].mean()),
                "series": series}


def _rounded(slope: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in slope.items()}


def samples_from_timings(timings: Iterable[tuple[float, float | None, float | None]], interval_s: float,
                         until_s: float | None = None) -> Iterator[Sample]:
    """The samples a live watch polling every ``interval_s`` would have produced, from each
    request's ``(due_s, first_token_s, end_s)`` (``None``: not yet come). Time 0 is the start of
    the measured phase; the series ends at ``until_s`` (default: the last event)."""
    rows = sorted(timings, key=lambda r: r[0])
    due = np.asarray([r[0] for r in rows], dtype=float)
    end = np.asarray([math.inf if r[2] is None else r[2] for r in rows], dtype=float)
    firsts = sorted((r[1], r[0]) for r in rows if r[1] is not None)
    if until_s is None:
        until_s = max([*due, *[e for e in end if math.isfinite(e)], *[f for f, _ in firsts]], default=0.0)
    k = 0
    steps = int(until_s / interval_s)
    for i in range(1, steps + 1):
        t = i * interval_s
        new = []
        while k < len(firsts) and firsts[k][0] <= t:
            first, sent = firsts[k]
            new.append((sent, first - sent))
            k += 1
        outstanding = int(np.count_nonzero((due <= t) & (end > t)))
        yield Sample(t, outstanding, tuple(new))


def describe(evidence: dict[str, Any]) -> str:
    """The evidence in one line (a cell's error, a log line)."""
    ttft, flight = evidence["ttft"], evidence["in_flight"]
    ts, fs = ttft["slope_s_per_s"], flight["slope_per_s"]
    pct = f"{ts['confidence']:.0%}"
    return (f"the server no longer keeps up: requests outstanding grew from {flight['early']:.1f} to "
            f"{flight['recent']:.1f} (slope {fs['value']:.2f}/s, {pct} interval [{fs['ci_low']:.2f}, "
            f"{fs['ci_high']:.2f}]) and TTFT rose from {ttft['early_ms']:.0f} ms to {ttft['recent_ms']:.0f} ms "
            f"(slope {ts['value'] * 1e3:.0f} ms/s, {pct} interval [{ts['ci_low'] * 1e3:.0f}, "
            f"{ts['ci_high'] * 1e3:.0f}]); stopped after {evidence['at_s']:g} s of load")
