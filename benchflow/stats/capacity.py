"""SLO capacity (METRICS.md / docs/metrics.md, "SLO capacity"): the highest open-loop rate at
which at least a target share of requests meets every SLO, with a confidence interval.

Pure and deterministic given ``seed``; the caller supplies ``probe(rate_rps, repetition)``, which
measures one cell and returns a :class:`ProbeOutcome`.

The search, once per repetition (independent searches, probes interleaved round-robin so that a
cut-off leaves every repetition equally far along):

1. probe ``min_rate``; a miss there ends that repetition as ``below_min``;
2. bracket: multiply the rate by ``step`` (default 2) until a probe misses; reaching
   ``max_rate`` with a pass ends it as ``above_max``;
3. bisect the bracket ``[lo (met), hi (missed)]`` until ``hi / lo - 1 <= precision``. Each split
   is a geometric point at a seeded random fraction in [0.35, 0.65] of the bracket (in log rate):
   the dither makes the repetitions' final brackets independent, so the interval below also
   covers the search's own resolution.

A repetition's capacity is the geometric midpoint of its final bracket. The capacity is the
geometric mean over repetitions; its interval is the Student-t interval of the mean of log
capacities (n - 1 degrees of freedom; at least 3 repetitions, as for every interval in
benchflow), widened on each side by half the widest final bracket (log). A probe whose
attainment is ``None`` (the cell failed or is invalid) or that is ``saturated`` counts as missing
the SLO; exceptions from ``probe`` propagate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchflow.errors import SpecError
from benchflow.records import LoadRun, RequestRecord, frame_to_records
from benchflow.stats.inference import MIN_N_FOR_CI, t_interval
from benchflow.stats.requests import last_known_ns, request_metrics
from benchflow.stats.slo import Slo, request_meets_slo, validate_slo

logger = logging.getLogger(__name__)

FOUND, BRACKET_ONLY, BELOW_MIN, ABOVE_MAX = "found", "bracket_only", "below_min", "above_max"
#: Range of the dithered split point, as a fraction of the bracket in log rate.
SPLIT_RANGE = (0.35, 0.65)


@dataclass(frozen=True)
class ProbeOutcome:
    """What the probe callable returns for one measured cell."""

    #: Share of requests meeting every SLO; ``None`` when the cell failed or is invalid.
    attainment: float | None
    n_requests: int
    cell_id: str | None = None
    saturated: bool = False


@dataclass
class CapacityResult:
    capacity_rps: float | None
    ci_low: float | None
    ci_high: float | None
    #: How the capacity and its interval were obtained, in plain words.
    method: str
    #: "found" | "bracket_only" | "below_min" | "above_max"
    status: str
    #: ``(highest rate met, lowest rate missed)`` over the repetitions (their hull).
    bracket: tuple[float, float] | None
    #: Every probe in order: rate_rps, repetition, attainment, n_requests, cell_id, saturated, met.
    probes: list[dict] = field(default_factory=list)
    #: A plain sentence for below_min / above_max / bracket_only; None when found.
    message: str | None = None
    #: Per repetition: status, bracket, capacity_rps, probes used.
    repetitions: list[dict] = field(default_factory=list)
    target_attainment: float | None = None
    confidence: float = 0.95

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bracket"] = list(self.bracket) if self.bracket is not None else None
        return d


def attainment_of(records: Any, slo: Any) -> float | None:
    """Share of measured requests meeting every SLO (``stats.slo.request_meets_slo``).

    ``records`` is a DataFrame of request records (``records_to_frame``), a list of
    :class:`RequestRecord` or a :class:`LoadRun`. Warm-up requests are left out. A failed request
    misses the SLO. A request cut off by the end of the cell (``incomplete``) counts as missing
    when what is known already breaks an objective (no first token after the TTFT threshold, or
    in flight longer than the e2e threshold, the cell's end being taken as the latest time any
    record knows), and is left out otherwise. ``None`` when no request counts. With every
    request successful it equals the summary's ``slo_attainment`` (the same per-request check).
    """
    good, counted = attainment_counts(records, slo)
    return good / counted if counted else None


def _as_records(records: Any) -> list[RequestRecord]:
    if isinstance(records, pd.DataFrame):
        return frame_to_records(records)
    if isinstance(records, LoadRun):
        return list(records.records)
    return list(records)


def _incomplete_missed(record: RequestRecord, slo: Slo, cell_end_ns: int) -> bool:
    """An incomplete request known to miss. It was still in flight when the cell stopped, which
    is no earlier than ``cell_end_ns`` (the latest time any record knows): no first token past the
    TTFT threshold, or in flight past the e2e threshold, is a miss whatever came later."""
    elapsed_ns = max(cell_end_ns, last_known_ns(record)) - record.start_ns
    for metric, stats in slo.items():
        for threshold_s in stats.values():
            limit_ns = threshold_s * 1e9
            if metric == "e2e" and elapsed_ns > limit_ns:
                return True
            if metric == "ttft":
                ttft_ns = record.chunks[0][0] - record.start_ns if record.chunks else elapsed_ns
                if ttft_ns > limit_ns:
                    return True
    return False


def attainment_counts(records: Any, slo: Slo) -> tuple[int, int]:
    """``(requests meeting every SLO, requests counted)``; see :func:`attainment_of`."""
    validate_slo(slo)
    measured = [r for r in _as_records(records) if not r.warmup]
    cell_end_ns = max((last_known_ns(r) for r in measured), default=0)
    good = counted = 0
    for record in measured:
        if record.incomplete:
            counted += _incomplete_missed(record, slo, cell_end_ns)
            continue
        counted += 1
        m = request_metrics(record)
        good += m is not None and request_meets_slo(m, slo)
    return good, counted


def _validate(attainment: float, min_rate: float, max_rate: float, precision: float, repetitions: int,
              step: float, max_probes: int | None, confidence: float) -> None:
    problems = []
    if not 0.0 < confidence < 1.0:
        problems.append(f"confidence must be in (0, 1), got {confidence!r}")
    if not 0.0 < attainment <= 1.0:
        problems.append(f"attainment must be in (0, 1], got {attainment!r}")
    if not (min_rate > 0 and math.isfinite(min_rate)):
        problems.append(f"min_rate must be a positive number of requests per second, got {min_rate!r}")
    if not (math.isfinite(max_rate) and max_rate > min_rate):
        problems.append(f"max_rate must be above min_rate ({min_rate!r}), got {max_rate!r}")
    if not 0.0 < precision < 1.0:
        problems.append(f"precision must be a relative width in (0, 1), got {precision!r}")
    if repetitions < 1:
        problems.append(f"repetitions must be at least 1, got {repetitions!r}")
    if not step > 1.0:
        problems.append(f"step must be above 1, got {step!r}")
    if max_probes is not None and max_probes < 1:
        problems.append(f"max_probes must be at least 1, got {max_probes!r}")
    if problems:
        raise SpecError(problems)


Search = Generator[float, bool, tuple[str, float | None, float | None]]


def _one_search(min_rate: float, max_rate: float, precision: float, step: float,
                rng: np.random.Generator, state: dict) -> Search:
    """One repetition: yields rates, receives met/missed; returns (status, lo, hi).

    ``state`` holds the current ``lo``/``hi`` so that a cut-off can report the bracket so far."""
    if not (yield min_rate):
        state["hi"] = min_rate
        return BELOW_MIN, None, min_rate
    state["lo"] = lo = min_rate
    hi = None
    while hi is None:
        if lo >= max_rate:
            return ABOVE_MAX, max_rate, None
        rate = min(lo * step, max_rate)
        if (yield rate):
            state["lo"] = lo = rate
        else:
            state["hi"] = hi = rate
    while hi / lo - 1.0 > precision:
        u = rng.uniform(*SPLIT_RANGE)
        mid = lo * (hi / lo) ** u
        if (yield mid):
            state["lo"] = lo = mid
        else:
            state["hi"] = hi = mid
    return FOUND, lo, hi


def _met(outcome: ProbeOutcome, attainment: float) -> bool:
    return outcome.attainment is not None and not outcome.saturated and outcome.attainment >= attainment


def search_capacity(probe: Callable[[float, int], ProbeOutcome], *, attainment: float, min_rate: float,
                    max_rate: float, precision: float, repetitions: int, max_probes: int | None = None,
                    should_stop: Callable[[], bool] | None = None, seed: int = 0, step: float = 2.0,
                    confidence: float = 0.95) -> CapacityResult:
    """The highest rate (req/s) at which at least ``attainment`` of requests meet every SLO.

    ``probe(rate_rps, repetition)`` measures one cell. ``precision`` is the relative width at
    which bisection stops (0.05: the final bracket's ends are within 5 %). ``max_probes`` counts
    probes over all repetitions; ``should_stop()`` is asked before each probe. Either cut-off
    ends with status ``bracket_only`` and the best bracket found.
    """
    _validate(attainment, min_rate, max_rate, precision, repetitions, step, max_probes, confidence)
    rngs = [np.random.default_rng([seed, r]) for r in range(repetitions)]
    states: list[dict] = [{"lo": None, "hi": None, "probes": 0} for _ in range(repetitions)]
    searches = [_one_search(min_rate, max_rate, precision, step, rngs[r], states[r]) for r in range(repetitions)]
    pending: dict[int, float] = {r: next(s) for r, s in enumerate(searches)}
    done: dict[int, tuple[str, float | None, float | None]] = {}
    probes: list[dict] = []
    cut: str | None = None
    while pending:
        for r in sorted(pending):
            if max_probes is not None and len(probes) >= max_probes:
                cut = f"the probe budget ({max_probes}) ran out"
            elif should_stop is not None and should_stop():
                cut = "the search was stopped (time ran out or it was cancelled)"
            if cut:
                break
            rate = pending.pop(r)
            outcome = probe(rate, r)
            if not isinstance(outcome, ProbeOutcome):
                raise TypeError(f"probe returned {type(outcome).__name__}, expected ProbeOutcome")
            met = _met(outcome, attainment)
            states[r]["probes"] += 1
            probes.append({"rate_rps": rate, "repetition": r, "attainment": outcome.attainment,
                           "n_requests": outcome.n_requests, "cell_id": outcome.cell_id,
                           "saturated": outcome.saturated, "met": met})
            logger.debug("capacity probe rep %s at %.4g req/s: attainment %s, %s", r, rate, outcome.attainment,
                         "met" if met else "missed")
            try:
                pending[r] = searches[r].send(met)
            except StopIteration as stop:
                done[r] = stop.value
        if cut:
            break
    result = _combine(done, states, repetitions, cut, attainment=attainment, min_rate=min_rate,
                      max_rate=max_rate, precision=precision, confidence=confidence)
    result.probes = probes
    result.target_attainment = attainment
    return result


def _hull(states: list[dict], max_rate: float) -> tuple[float, float] | None:
    """The bracket every repetition's search so far agrees on: ``[lowest rate met, highest rate
    missed]``; before any probe missed, the upper end is ``max_rate`` (nothing above it is probed).
    None when no probe met the SLO yet."""
    los = [s["lo"] for s in states if s["lo"] is not None]
    his = [s["hi"] for s in states if s["hi"] is not None]
    if not los:
        return None
    return min(los), max(his) if his else max_rate


def _combine(done: dict, states: list[dict], repetitions: int, cut: str | None, *, attainment: float,
             min_rate: float, max_rate: float, precision: float, confidence: float) -> CapacityResult:
    reps = []
    for r in range(repetitions):
        status, lo, hi = done.get(r, (BRACKET_ONLY, states[r]["lo"], states[r]["hi"]))
        cap = math.sqrt(lo * hi) if status == FOUND else None
        reps.append({"repetition": r, "status": status, "bracket": [lo, hi], "capacity_rps": cap,
                     "probes": states[r]["probes"]})
    statuses = {rep["status"] for rep in reps}
    share = f"{attainment:.4g} of requests meeting every SLO"
    if cut is not None:
        return CapacityResult(None, None, None, method=f"bracket only: {cut} before the bisection reached "
                              f"{precision:.3g} relative precision", status=BRACKET_ONLY,
                              bracket=_hull(states, max_rate),
                              message=f"{cut}; the capacity lies in the bracket (the lowest rate any repetition met, the highest "
                                      f"it missed, or max_rate when none missed yet)",
                              repetitions=reps, confidence=confidence)
    if statuses == {BELOW_MIN}:
        return CapacityResult(None, None, None, method="no capacity: the lowest rate already misses the SLO",
                              status=BELOW_MIN, bracket=None, repetitions=reps, confidence=confidence,
                              message=f"even min_rate {min_rate:g} req/s has fewer than {share}; "
                                      "the capacity is below min_rate")
    if statuses == {ABOVE_MAX}:
        return CapacityResult(None, None, None, method="no capacity: the highest rate still meets the SLO",
                              status=ABOVE_MAX, bracket=None, repetitions=reps, confidence=confidence,
                              message=f"max_rate {max_rate:g} req/s still has at least {share}; "
                                      "the capacity is above max_rate")
    # Repetitions that ended below min_rate / above max_rate count at that limit (censored).
    caps = [rep["capacity_rps"] if rep["status"] == FOUND else (min_rate if rep["status"] == BELOW_MIN else max_rate)
            for rep in reps]
    censored = sum(rep["status"] != FOUND for rep in reps)
    logs = np.log(np.asarray(caps, dtype=float))
    capacity = float(math.exp(logs.mean()))
    half_width = max((math.log(rep["bracket"][1] / rep["bracket"][0]) / 2 for rep in reps if rep["status"] == FOUND),
                     default=0.0)
    ci = t_interval(logs, confidence)
    n = len(caps)
    if ci is None:
        low = high = None
        method = (f"geometric mean of {n} repetition(s)' independent searches (bracket, then dithered bisection "
                  f"to {precision:.3g}); no interval with fewer than {MIN_N_FOR_CI} repetitions")
    else:
        low, high = math.exp(ci[0] - half_width), math.exp(ci[1] + half_width)
        method = (f"geometric mean of {n} repetitions' independent searches (bracket, then dithered bisection to "
                  f"{precision:.3g}); {confidence:.0%} Student-t interval of the mean log capacity, widened by "
                  "half the widest final bracket")
    if censored:
        method += f"; {censored} of {n} repetitions ended outside [min_rate, max_rate] and count at that limit"
    lo_hi = _hull(states, max_rate)
    return CapacityResult(capacity, low, high, method=method, status=FOUND, bracket=lo_hi, repetitions=reps,
                          confidence=confidence)
