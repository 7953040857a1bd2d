"""False verdicts and power of benchflow's comparison, and false alarms of the nightly regression
check, measured on the virtual-time simulator (no wall clock). Prints the markdown tables that
docs/metrics.md quotes.

    PYTHONPATH=. .venv/bin/python bench/verdicts.py            # 200 pairs per n (about 2-4 minutes)
    PYTHONPATH=. .venv/bin/python bench/verdicts.py --pairs 400

One repetition = one closed-loop run of the default simulator profile (``benchflow.stats.calibration``:
32 requests of N(256,64)/(64,16) at concurrency 8, its own workload seed). Pairs at n use disjoint
repetitions. Power: the candidate's step costs are scaled by 1.05 / 1.10 (``time_scale``).
"""

from __future__ import annotations

import argparse
import sys
import time

from benchflow.stats import calibration as cal

NS = (2, 3, 5, 10)


def _table(title: str, metrics: list[str], rows: dict[int, cal.Rates], any_label: str) -> str:
    head = "| n | " + " | ".join(f"`{m}`" for m in metrics) + f" | {any_label} |"
    sep = "|---:|" + "---:|" * (len(metrics) + 1)
    body = [f"| {n} | " + " | ".join(f"{r.per_metric[m]:.1%}" for m in metrics) + f" | {r.any:.1%} |"
            for n, r in rows.items()]
    return "\n".join([f"**{title}**", "", head, sep, *body, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=200, help="pairs per n (default 200)")
    p.add_argument("--regression-tolerance", type=float, default=0.05, help="the nightly's tolerance (default 0.05)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    metrics = list(cal.DEFAULT_METRICS)
    pool = cal.repetition_pool(2 * max(NS) * args.pairs)
    print(f"{len(pool)} simulated repetitions ({cal.REQUESTS} requests of {cal.DATASET} at concurrency "
          f"{cal.CONCURRENCY}); {args.pairs} disjoint pairs per n\n")
    cv = cal.spread(pool, metrics)
    print("| metric | CV across repetitions |\n|---|---:|")
    print("\n".join(f"| `{m}` | {cv[m]:.1%} |" for m in metrics) + "\n")
    print(_table("A/A false verdicts (better or worse), tolerance 0", metrics,
                 {n: cal.verdict_rates(pool, n, args.pairs) for n in NS}, "any metric"))
    for change in (0.05, 0.10):
        print(_table(f"Power: candidate {change:.0%} slower (verdict 'worse'), tolerance 0", metrics,
                     {n: cal.verdict_rates(pool, n, args.pairs, slowdown=change) for n in NS}, "any metric"))
    tol = args.regression_tolerance
    print(_table(f"Nightly regression check, A/A false alarms, tolerance {tol:g}", metrics,
                 {n: cal.regression_rates(pool, n, args.pairs, tolerance=tol) for n in NS}, "run flagged"))
    print(_table(f"Nightly regression check, a 15% slowdown detected, tolerance {tol:g}", metrics,
                 {n: cal.regression_rates(pool, n, args.pairs, tolerance=tol, slowdown=0.15) for n in NS},
                 "run flagged"))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
