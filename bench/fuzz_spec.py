"""Fuzzes the spec loader with 10,000 inputs and reports tracebacks and slow inputs (issue 11.6).

Each input (see tests/spec/fuzz.py) is a valid spec with hostile mutations, given as a dict or as
damaged YAML/JSON text, run through what `benchflow validate --json` does. An input must end
valid or as a clean SpecError; anything else is a traceback. Inputs over 5 s count as hangs.
The goal is 0 of each. Writes bench/results/fuzz_spec.json.

    .venv/bin/python bench/fuzz_spec.py [--n 10000] [--seed 0] [--slow-s 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.spec.fuzz import make_input, run_input  # noqa: E402


def fuzz(n: int = 10_000, seed: int = 0, slow_s: float = 5.0) -> dict:
    counts: Counter[str] = Counter()
    tracebacks: list[dict] = []
    slow: list[dict] = []
    seconds: list[float] = []
    start = time.perf_counter()
    for i in range(seed, seed + n):
        item = make_input(random.Random(i))
        outcome = run_input(item)
        counts[outcome.kind] += 1
        seconds.append(outcome.seconds)
        if outcome.kind == "traceback":
            tracebacks.append({"input": i, "error": outcome.detail.strip().splitlines()[-1],
                               "detail": outcome.detail, "spec": item.describe()})
        if outcome.seconds > slow_s:
            slow.append({"input": i, "seconds": round(outcome.seconds, 2), "spec": item.describe()})
    seconds.sort()
    return {
        "inputs": n, "first_seed": seed, "valid": counts["valid"], "refused": counts["refused"],
        "tracebacks": len(tracebacks), "over_slow_s": len(slow), "slow_s": slow_s,
        "seconds_total": round(time.perf_counter() - start, 1),
        "seconds_p50": round(seconds[len(seconds) // 2], 4), "seconds_max": round(seconds[-1], 3),
        "traceback_examples": tracebacks[:20], "slow_examples": slow[:20],
    }


def main(argv: list[str] | None = None) -> dict:
    """Runs the fuzz, prints a summary and returns the result (bench/run_all.py calls this)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz_spec.json")
    args = parser.parse_args(argv)
    result = fuzz(args.n, args.seed, args.slow_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{result['inputs']:,} fuzzed specs: {result['valid']:,} valid, {result['refused']:,} refused, "
          f"{result['tracebacks']} tracebacks, {result['over_slow_s']} over {args.slow_s:g} s "
          f"(max {result['seconds_max']} s, total {result['seconds_total']} s)")
    for t in result["traceback_examples"][:5]:
        print(f"  traceback at input {t['input']}: {t['error']}\n    {t['spec']}")
    for s in result["slow_examples"][:5]:
        print(f"  slow input {s['input']} ({s['seconds']} s): {s['spec']}")
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if outcome["tracebacks"] or outcome["over_slow_s"] else 0)
