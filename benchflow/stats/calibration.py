"""Calibration of the comparison and the regression check on the virtual-time simulator.

One *repetition* is one closed-loop run of :mod:`benchflow.sim.virtual` (no wall clock) with its
own workload seed, as a campaign's repetitions get their own seeds: the run-to-run spread comes
from the simulator's continuous batching of a different draw of prompt and output lengths, not
from an invented noise model. A repetition is summarised like a cell (``ttft_ms.p99``,
``output_throughput``, ...).

* **A/A**: pair ``k`` at ``n`` repetitions per side takes repetitions ``2nk .. 2nk+2n-1`` of one
  pool (every repetition is used once per ``n``), so the pairs are independent.
* **Power**: the candidate's repetitions run with every step cost scaled by ``1 + change``
  (``time_scale``). In a closed loop the schedule does not depend on time, so that is exactly the
  same run with every latency times ``1 + change`` and every throughput divided by it:
  :func:`slowed` applies that to the pool (``tests/stats/test_calibration.py`` checks the
  equivalence against a real ``time_scale`` run).

``bench/verdicts.py`` prints the tables that docs/metrics.md quotes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchflow.spec import CompareSpec, RegressionSpec

#: The spec's defaults (one definition): a campaign's comparison tolerance and the nightly check's.
_COMPARE_TOLERANCE: float = CompareSpec.model_fields["tolerance"].default
_REGRESSION_TOLERANCE: float = RegressionSpec.model_fields["tolerance"].default

#: The workload of one simulated repetition (small, so that thousands run in seconds).
DATASET = "N(256,64)/(64,16)"
REQUESTS, CONCURRENCY = 32, 8
LATENCIES = {"ttft_ms": "ttft_s", "tpot_ms": "tpot_s", "e2e_ms": "e2e_s"}
PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}
THROUGHPUTS = ("output_throughput", "request_throughput")
#: The campaign spec's default compare.metrics.
DEFAULT_METRICS: tuple[str, ...] = tuple(CompareSpec().metrics)


def simulated_repetition(seed: int, *, requests: int = REQUESTS, concurrency: int = CONCURRENCY,
                         dataset: str = DATASET, time_scale: float = 1.0,
                         engine_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One virtual-time closed-loop run of the default simulator profile, summarised like a cell."""
    from benchflow.sim.config import build_engine_config, load_sim_config
    from benchflow.sim.virtual import VirtualRequest, run_closed_loop
    from benchflow.workload import parse_notation

    config = build_engine_config(load_sim_config({"time_scale": time_scale}, dict(engine_args or {})))
    prompts = parse_notation(dataset).generate(requests, seed)
    run = run_closed_loop(config, [VirtualRequest(p.input_tokens, p.max_tokens) for p in prompts], concurrency)
    summary: dict[str, Any] = {
        name: {stat: run.percentile(attr, q) * 1000.0 for stat, q in PERCENTILES.items()}
        for name, attr in LATENCIES.items()
    }
    summary["output_throughput"] = run.output_throughput
    summary["request_throughput"] = run.request_throughput
    return summary


def repetition_pool(count: int, *, first_seed: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
    """``count`` simulated repetitions with seeds ``first_seed ..``."""
    return [simulated_repetition(first_seed + i, **kwargs) for i in range(count)]


@functools.lru_cache(maxsize=4)
def cached_pool(count: int) -> tuple[dict[str, Any], ...]:
    """:func:`repetition_pool` with the defaults, made once per process (tests share it)."""
    return tuple(repetition_pool(count))


def slowed(summary: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """What ``time_scale = factor`` makes of a closed-loop repetition: latencies x factor,
    throughputs / factor."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping):
            out[key] = {k: v * factor for k, v in value.items()}
        else:
            out[key] = value / factor if key in THROUGHPUTS else value
    return out


def rows(summaries: Sequence[Mapping[str, Any]], backend: str = "a", load: str = "c8") -> list[dict[str, Any]]:
    """Analysis input rows (completed cells) for a list of repetition summaries."""
    return [{"cell_id": f"{backend}-{i}", "backend_name": backend, "load_label": load, "status": "completed",
             "summary": dict(s)} for i, s in enumerate(summaries)]


def pairs(pool: Sequence[Mapping[str, Any]], n: int, count: int) -> list[tuple[list, list]]:
    """``count`` disjoint (baseline, candidate) splits of ``pool``, ``n`` repetitions each."""
    if len(pool) < 2 * n * count:
        raise ValueError(f"a pool of {len(pool)} repetitions cannot give {count} disjoint pairs at n={n}")
    return [(list(pool[2 * n * k: 2 * n * k + n]), list(pool[2 * n * k + n: 2 * n * (k + 1)])) for k in range(count)]


@dataclass(frozen=True)
class Rates:
    """Per metric: the share of pairs with the counted outcome; ``any`` = of pairs with it in any metric."""

    n: int
    pairs: int
    per_metric: dict[str, float]
    any: float


def _rates(pool: Sequence[Mapping[str, Any]], n: int, count: int, metrics: Sequence[str], factor: float,
           outcome: Callable[[list, list], dict[str, bool]]) -> Rates:
    hits = {m: 0 for m in metrics}
    anyhit = 0
    for base, cand in pairs(pool, n, count):
        found = outcome(base, [slowed(s, factor) for s in cand] if factor != 1.0 else cand)
        for m in metrics:
            hits[m] += found[m]
        anyhit += any(found.values())
    return Rates(n, count, {m: hits[m] / count for m in metrics}, anyhit / count)


def verdict_rates(pool: Sequence[Mapping[str, Any]], n: int, count: int, *,
                  metrics: Sequence[str] = DEFAULT_METRICS, tolerance: float = _COMPARE_TOLERANCE,
                  slowdown: float = 0.0) -> Rates:
    """Share of pairs whose comparison verdict is "better"/"worse" (A/A, ``slowdown`` 0: false
    verdicts), or, with a ``slowdown``, "worse" (power: the right direction only)."""
    from benchflow.analysis import comparison_rows

    wanted = {"worse"} if slowdown else {"better", "worse"}

    def outcome(base: list, cand: list) -> dict[str, bool]:
        found = comparison_rows(rows(base, "base") + rows(cand, "cand"), list(metrics), "base", tolerance=tolerance)
        return {r["metric"]: r["verdict"] in wanted for r in found}

    return _rates(pool, n, count, metrics, 1.0 + slowdown, outcome)


def regression_rates(pool: Sequence[Mapping[str, Any]], n: int, count: int, *,
                     metrics: Sequence[str] = DEFAULT_METRICS, tolerance: float = _REGRESSION_TOLERANCE,
                     slowdown: float = 0.0) -> Rates:
    """Share of nightly checks (pairs) that report a regression: false alarms with ``slowdown`` 0."""
    from benchflow.regression import detect

    def outcome(base: list, cand: list) -> dict[str, bool]:
        report = detect(rows(base), rows(cand), metrics=list(metrics), tolerance=tolerance)
        flagged = {f.metric for f in report.regressions}
        return {m: m in flagged for m in metrics}

    return _rates(pool, n, count, metrics, 1.0 + slowdown, outcome)


def spread(pool: Sequence[Mapping[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Coefficient of variation of each metric across the pool's repetitions."""
    from benchflow.stats.keys import metric_value

    out = {}
    for m in metrics:
        v = np.asarray([metric_value(s, m) for s in pool], dtype=float)
        out[m] = float(v.std(ddof=1) / v.mean())
    return out
