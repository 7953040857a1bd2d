"""SLO capacity: coverage of the search's interval, cells used and error, against a fine-grid
ground truth, all on the simulator in virtual time (benchflow.stats.capacity_virtual).

Scenario: the default simulator profile with max-num-seqs 16; 150 Poisson requests a cell,
prompts 128-1023 and outputs 32-127 tokens; SLO ttft p99 <= 500 ms and tpot p99 <= 50 ms per
request; target attainment 0.95. Search: min_rate 4, max_rate 64 req/s, precision 0.05,
3 repetitions.

1. Ground truth: for each of ``--truth-seeds`` workload seeds (disjoint from the searches'),
   every rate of a fine geometric grid (2 % steps, 5-13 req/s) is run; the seed's capacity is
   the midpoint between its highest rate meeting the target and the next grid rate. The truth is
   the geometric mean over seeds (what the search's geometric mean estimates).
2. ``--runs`` seeded searches; each reports capacity and its 95 % interval. Coverage = share of
   intervals containing the truth (with its binomial 95 % interval). Each repetition of a search
   is also compared with the fine grid over its own seed (same seed and workload).

    .venv/bin/python bench/capacity.py [--runs 100] [--truth-seeds 40] [--repetitions 3]
                                           [--reuse-truth OLD.json] [--workers N]

Writes bench/results/capacity.json. About 5 CPU-minutes with the defaults (17 minutes of wall time on
a 2-core machine at load average 14).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import stats as sps  # noqa: E402

from benchflow.stats.capacity import search_capacity  # noqa: E402
from benchflow.stats.capacity_virtual import VirtualScenario, geometric_grid  # noqa: E402

TARGET = 0.95
SEARCH = {"attainment": TARGET, "min_rate": 4.0, "max_rate": 64.0, "precision": 0.05, "repetitions": 3}
GRID = geometric_grid(5.0, 13.0, 0.02)
TRUTH_SEED_BASE = 1_000_000


def truth_of_seed(seed: int) -> float | None:
    return VirtualScenario().grid_capacity((TRUTH_SEED_BASE + seed, 0), GRID, TARGET)


def one_search(run: int, check_grid: bool) -> dict:
    scenario = VirtualScenario()
    result = search_capacity(scenario.probe(run), seed=run, **SEARCH)
    out = {"run": run, "capacity_rps": result.capacity_rps, "ci_low": result.ci_low, "ci_high": result.ci_high,
           "status": result.status, "cells": len(result.probes), "repetitions": result.repetitions}
    if check_grid:  # the same seeds and workload on the fine grid
        out["grid_per_repetition"] = [scenario.grid_capacity((run, r), GRID, TARGET)
                                      for r in range(SEARCH["repetitions"])]
    return out


def _set_repetitions(n: int) -> None:
    SEARCH["repetitions"] = n


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    a = (1 - confidence) / 2
    low = sps.beta.ppf(a, k, n - k + 1) if k > 0 else 0.0
    high = sps.beta.ppf(1 - a, k + 1, n - k) if k < n else 1.0
    return float(low), float(high)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100, help="seeded searches (coverage sample size)")
    ap.add_argument("--truth-seeds", type=int, default=40, help="workload seeds on the fine grid (ground truth)")
    ap.add_argument("--grid-checks", type=int, default=5, help="searches also compared with their own seeds' grid")
    ap.add_argument("--repetitions", type=int, default=SEARCH["repetitions"], help="repetitions per search")
    ap.add_argument("--reuse-truth", type=Path, help="take the per-seed ground truth from an earlier capacity.json")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "capacity.json")
    args = ap.parse_args(argv)
    SEARCH["repetitions"] = args.repetitions
    t0 = time.perf_counter()
    reused = json.loads(args.reuse_truth.read_text())["truth_per_seed"] if args.reuse_truth else None
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_set_repetitions,
                             initargs=(args.repetitions,)) as pool:
        truths = reused or list(pool.map(truth_of_seed, range(args.truth_seeds)))
        runs = list(pool.map(one_search, range(args.runs), [i < args.grid_checks for i in range(args.runs)]))
    on_grid = [t for t in truths if t is not None]
    truth = math.exp(sum(math.log(t) for t in on_grid) / len(on_grid))
    with_ci = [r for r in runs if r["ci_low"] is not None]
    covered = sum(r["ci_low"] <= truth <= r["ci_high"] for r in with_ci)
    cov_low, cov_high = clopper_pearson(covered, len(with_ci))
    errors = sorted(abs(r["capacity_rps"] / truth - 1) for r in runs if r["capacity_rps"] is not None)
    widths = sorted(r["ci_high"] / r["ci_low"] - 1 for r in with_ci)
    rep_errors = [abs(rep["capacity_rps"] / g - 1) for r in runs if "grid_per_repetition" in r
                  for rep, g in zip(r["repetitions"], r["grid_per_repetition"]) if g and rep["capacity_rps"]]
    cells = sum(r["cells"] for r in runs) / len(runs)
    summary = {
        "scenario": {"search": SEARCH, "grid_rates": len(GRID), "grid_step": 0.02,
                     "grid_range_rps": [GRID[0], GRID[-1]], "truth_seeds": len(truths), "runs": args.runs},
        "truth_rps": truth, "truth_seeds_off_grid": len(truths) - len(on_grid),
        "truth_per_seed_range_rps": [min(on_grid), max(on_grid)],
        "truth_per_seed_log_sd": float(np.std(np.log(on_grid), ddof=1)) if len(on_grid) > 1 else None,
        "coverage": covered / len(with_ci) if with_ci else None, "coverage_ci95": [cov_low, cov_high],
        "runs_with_interval": len(with_ci), "statuses": {s: sum(r["status"] == s for r in runs)
                                                         for s in {r["status"] for r in runs}},
        "mean_cells_per_search": cells, "grid_cells_for_same_repetitions": len(GRID) * SEARCH["repetitions"],
        "median_abs_rel_error": float(np.median(errors)) if errors else None,
        "p90_abs_rel_error": float(np.percentile(errors, 90)) if errors else None,
        "median_rel_ci_width": float(np.median(widths)) if widths else None,
        "repetition_vs_own_grid_max_rel_error": max(rep_errors) if rep_errors else None,
        "repetition_vs_own_grid_median_rel_error": float(np.median(rep_errors)) if rep_errors else None,
        "repetitions_compared_with_own_grid": len(rep_errors),
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": runs, "truth_per_seed": truths}, indent=1))
    print(f"SLO capacity (virtual time, {args.runs} seeded searches of {SEARCH['repetitions']} repetitions):")
    print(f"  ground truth (fine grid, {len(GRID)} rates x {len(truths)} seeds): {truth:.3f} req/s")
    if with_ci:
        print(f"  coverage of the 95% interval: {covered}/{len(with_ci)} = {covered / len(with_ci):.1%} "
              f"(Clopper-Pearson 95%: {cov_low:.1%}-{cov_high:.1%}); "
              f"median relative width {summary['median_rel_ci_width']:.1%}")
    print(f"  cells per search: {cells:.1f} mean vs {len(GRID) * SEARCH['repetitions']} for the fine grid "
          f"over the same {SEARCH['repetitions']} repetitions ({len(GRID)} per repetition)")
    if errors:
        print(f"  |capacity / truth - 1|: median {summary['median_abs_rel_error']:.1%}, "
              f"p90 {summary['p90_abs_rel_error']:.1%}")
    if rep_errors:
        print("  one repetition vs the fine grid on its own seed: "
              f"median {summary['repetition_vs_own_grid_median_rel_error']:.1%}, "
              f"max {summary['repetition_vs_own_grid_max_rel_error']:.1%} ({len(rep_errors)} repetitions)")
    print(f"  statuses: {summary['statuses']}; wall {summary['wall_s']:.0f} s; -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
