"""The tuning benchmark (issue 14): how many trials each sampler needs, against an exhaustive optimum.

The benchmark space (``BENCH_SPEC`` below) tunes the simulator (Llama-3-8B on an H100) for the most
output throughput at 64 concurrent clients (1024-token prompts, 128-token outputs) under p99 TTFT
and p99 TPOT SLOs: max-num-seqs 8-128 (step 8, 16 values) x max-num-batched-tokens (categorical,
5) x chunked prefill (bool) x gpu-memory-utilization 0.25-0.45 (step 0.05, 5) = 800 configurations,
with the flag constraint max-num-batched-tokens >= max-num-seqs. Small KV caches preempt, large
batches break the TPOT SLO, chunk sizes trade TTFT for TPOT, and some configurations do not start.

1. Every configuration is evaluated in virtual time (:mod:`benchflow.tuning.virtual`) through the
   study's own trial code (``evaluate_config``: flag constraints, deploy, cells, summary, SLO
   constraints, objective): the best feasible one is the exhaustive optimum.
2. Each sampler runs the study's own trial loop (``benchflow.tuning.study.run_trial``, virtual
   steps) until the best feasible trial is within 3% of the optimum; the count (every trial,
   infeasible ones included) is the median over 5 seeds. Measurements are deterministic and shared
   through a cache, so only the first sweep costs simulator time.
3. Two objectives (output throughput up, p99 TTFT down, same SLOs): the hypervolume of the feasible
   trials after K trials as a share of the exhaustive Pareto front's, median over 5 seeds.
4. The demo tuning spec's space (``deployments/tuning/demo.yaml``, 5,490 configurations) is swept
   the same way: its exhaustive optimum is the reference of the demo's acceptance test
   (bench/results/tuning-demo-optimum.json, read by tests/tuning/test_demo_optimum.py). Its
   landscape is flat (a fifth of it is within 3% of the optimum), so it does not rank samplers.

Writes bench/results/tuning.json and bench/results/tuning.md (the tables quoted in the README).
GP (Optuna's GPSampler) needs torch: ``make bench`` installs it first (``BENCH_TORCH``, the CPU wheel
torch==2.13.0 on this machine); run by hand without torch, GP is reported as skipped. GP costs most of
the time: 20 seeds took about 25 minutes on a loaded machine. Measured on 2 shared, busy cores: the 800-configuration sweep 214 s,
the samplers 250 s with --seeds 20 (the default is 5), the demo sweep (4) about 10 minutes at a load
average of 16 (``--skip-demo`` leaves it out). ``--cache F`` saves the sweep for reruns.

    PYTHONPATH=. .venv/bin/python bench/tuning.py [--seeds 5] [--max-trials 400] [--skip-demo] [--cache F]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import pickle
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from benchflow.tuning.spec import load_tuning_spec  # noqa: E402
from benchflow.tuning.study import feasible_best, make_sampler, run_trial  # noqa: E402
from benchflow.tuning.virtual import cached_steps, evaluate_config, virtual_steps  # noqa: E402

DEMO = ROOT / "deployments" / "tuning" / "demo.yaml"
WITHIN = 0.03
TTFT_KEY = "ttft_ms.p99"

BENCH_SPEC: dict[str, Any] = {
    "name": "tuning-bench", "model": "sim-llama-8b", "allow_simulated": True,
    "backend": {"name": "sim", "kind": "sim"},
    "search_space": {
        "max-num-seqs": {"type": "int", "low": 8, "high": 128, "step": 8},
        "max-num-batched-tokens": {"type": "categorical", "choices": [512, 1024, 2048, 4096, 8192]},
        "enable-chunked-prefill": {"type": "bool"},
        "gpu-memory-utilization": {"type": "float", "low": 0.25, "high": 0.45, "step": 0.05},
    },
    "constraints": ["max-num-batched-tokens >= max-num-seqs"],
    "workload": {"dataset": "D(1024,128)", "seed": 42, "load_points": [{"concurrency": 64}], "max_requests": 128,
                 "warmup_requests": 8, "max_duration_s": "120s", "request_timeout_s": "60s"},
    "objective": {"load_point": "c64", "metrics": {"output_throughput": "maximize"}},
    "slo": {"ttft": {"p99": "10s"}, "tpot": {"p99": "48ms"}},
    "trials": {"count": 400},
}


def load_spec(base: dict[str, Any] | None = None, objectives: dict[str, str] | None = None,
              sampler: str | None = None, seed: int = 0) -> Any:
    """The benchmark spec (or ``base``, e.g. the demo's) with its objectives and sampler replaced."""
    import copy

    data = copy.deepcopy(base or BENCH_SPEC)
    if objectives:
        data["objective"]["metrics"] = objectives
    data["sampler"] = {"seed": seed, **({"name": sampler} if sampler else {})}
    return load_tuning_spec(data)


def demo_data() -> dict[str, Any]:
    from benchflow.spec.reader import read_spec_file

    return read_spec_file(DEMO)


def configurations(spec: Any) -> list[dict[str, Any]]:
    names = list(spec.search_space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(spec.search_space[n].values() for n in names))]


def exhaustive(spec: Any, steps: Any) -> list[dict[str, Any]]:
    rows = []
    for i, flags in enumerate(configurations(spec)):
        ev = evaluate_config(spec, flags, steps, number=i)
        rows.append({"flags": flags, "feasible": ev.feasible, "values": ev.values,
                     "ttft_p99_ms": ev.attrs.get(f"slo {TTFT_KEY}"),
                     "infeasible": (ev.attrs.get("infeasible") or "").split("\n")[0] or None})
    return rows


# --- samplers ---------------------------------------------------------------------------------

def _tpe(seed: int, **kw: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, **kw)


def sampler_variants(spec_for: Any) -> dict[str, Any]:
    """name -> ``factory(seed)``; the first four are what a tuning spec's ``sampler.name`` gives."""
    variants: dict[str, Any] = {
        "grid (Optuna GridSampler)": lambda seed: make_sampler(spec_for("grid", seed)),
        "random": lambda seed: make_sampler(spec_for("random", seed)),
        "tpe (benchflow default: TPE_OPTIONS)": lambda seed: make_sampler(spec_for("tpe", seed)),
        "tpe, Optuna's defaults": lambda seed: _tpe(seed),
        "tpe, multivariate (benchflow before)": lambda seed: _tpe(seed, multivariate=True),
        "nsga2 (population 50)": lambda seed: make_sampler(spec_for("nsga2", seed)),
        "qmc (Sobol, scrambled)": lambda seed: optuna.samplers.QMCSampler(seed=seed, scramble=True),
    }
    if importlib.util.find_spec("torch") is not None:
        variants["gp"] = lambda seed: make_sampler(spec_for("gp", seed))
    return variants


def _study(spec: Any, sampler: optuna.samplers.BaseSampler, name: str) -> optuna.Study:
    return optuna.create_study(study_name=name, sampler=sampler, storage=optuna.storages.InMemoryStorage(),
                               directions=["maximize" if d == "maximize" else "minimize" for d in spec.directions])


def trials_to_reach(spec: Any, sampler: optuna.samplers.BaseSampler, target: float, steps: Any,
                    max_trials: int) -> int | None:
    """Trials (all of them, infeasible ones included) until the best feasible value >= ``target``."""
    study = _study(spec, sampler, "bench")
    for n in range(1, max_trials + 1):
        run_trial(study, spec, steps)
        best = feasible_best(study)
        if best and best[0].values[0] >= target:
            return n
        if study._stop_flag:  # the grid sampler is done
            return None
    return None


def _median(counts: list[int | None]) -> float | None:
    """The median, a seed that never got there counting as worst; None when that is the median."""
    m = statistics.median([c if c is not None else float("inf") for c in counts])
    return None if m == float("inf") else m


def single_objective(spec: Any, rows: list[dict[str, Any]], steps: Any, seeds: int, max_trials: int) -> list[dict]:
    optimum = max(r["values"][0] for r in rows if r["feasible"])
    target = optimum * (1 - WITHIN)
    out = []
    for name, factory in sampler_variants(lambda s, seed: load_spec(sampler=s, seed=seed)).items():
        t = time.perf_counter()
        counts = [trials_to_reach(spec, factory(seed), target, steps, max_trials) for seed in range(seeds)]
        out.append({"sampler": name, "counts": counts, "median": _median(counts[:5]), "median_all": _median(counts),
                    "reached": sum(c is not None for c in counts), "seconds": round(time.perf_counter() - t, 1)})
        print(f"  {name}: {counts} -> median {out[-1]['median']} (all seeds: {out[-1]['median_all']})", flush=True)
    return out


# --- two objectives ---------------------------------------------------------------------------

def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """2-D hypervolume of (maximize x, minimize y) points against ``ref`` = (x_min, y_max)."""
    pts = sorted({(x, y) for x, y in points if x > ref[0] and y < ref[1]}, key=lambda p: (-p[0], p[1]))
    hv, best_y = 0.0, ref[1]
    for x, y in pts:  # by throughput, high to low; each point adds the strip below the best TTFT so far
        if y < best_y:
            hv += (x - ref[0]) * (best_y - y)
            best_y = y
    return hv


def multi_objective(rows: list[dict[str, Any]], steps: Any, seeds: int, budgets: list[int]) -> dict[str, Any]:
    objectives = {"output_throughput": "maximize", TTFT_KEY: "minimize"}
    spec = load_spec(objectives=objectives)
    feasible = [(r["values"][0], r["ttft_p99_ms"]) for r in rows if r["feasible"]]
    # the nadir of every feasible configuration: a trial adds volume only where it beats them all
    ref = (min(x for x, _ in feasible), max(y for _, y in feasible))
    front_hv = hypervolume(feasible, ref)
    def spec_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
        return make_sampler(load_spec(objectives=objectives, sampler=name, seed=seed))

    variants = {
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
        "tpe (benchflow default)": lambda seed: spec_sampler("tpe", seed),
        "nsga2 (population 50)": lambda seed: spec_sampler("nsga2", seed),
        "nsga2 (population 10)": lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
    }
    table = []
    for name, factory in variants.items():
        shares: dict[int, list[float]] = {k: [] for k in budgets}
        for seed in range(min(seeds, 10)):
            study = _study(spec, factory(seed), "bench-mo")
            for n in range(1, max(budgets) + 1):
                run_trial(study, spec, steps)
                if n in budgets:
                    pts = [tuple(t.values) for t in study.trials
                           if t.user_attrs.get("measured") and not t.user_attrs.get("infeasible")]
                    shares[n].append(hypervolume(pts, ref) / front_hv)
        table.append({"sampler": name, **{f"hv_share_at_{k}": statistics.median(v) for k, v in shares.items()},
                      "per_seed": {str(k): [round(x, 4) for x in v] for k, v in shares.items()}})
        print(f"  {name}: " + ", ".join(f"K={k}: {statistics.median(v):.3f}" for k, v in shares.items()), flush=True)
    return {"objectives": objectives, "reference_point": ref, "front_hypervolume": front_hv, "table": table}


# --- output -----------------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    ex, so, mo = result["exhaustive"], result["single_objective"], result["multi_objective"]
    best = ex["optimum"]
    lines = [
        f"Benchmark space (`BENCH_SPEC` in bench/tuning.py): {ex['configurations']:,} configurations "
        f"({ex['feasible']:,} feasible; {ex['within_3pct']} within 3% of the optimum). Exhaustive optimum "
        f"(virtual time): **{best['value']:.1f} tok/s** output throughput at c64 with {best['flags']}.",
        "",
        f"Trials to come within 3% of it (cap {result['max_trials']}, — = not reached; infeasible trials count), "
        f"median over seeds 0-4 and over all {result['seeds']} seeds:",
        "",
        f"| sampler | median, 5 seeds | median, {result['seeds']} seeds | seeds 0-4 |",
        "| --- | ---: | ---: | --- |",
    ]
    for r in so:
        med, med_all = ("—" if m is None else f"{m:g}" for m in (r["median"], r["median_all"]))
        per = ", ".join("—" if c is None else str(c) for c in r["counts"][:5])
        lines.append(f"| {r['sampler']} | {med} | {med_all} | {per} |")
    if result.get("gp_skipped"):
        lines += ["", f"GP: {result['gp_skipped']}"]
    budgets = [k for k in result["budgets"]]
    lines += ["", f"Two objectives (output throughput up, p99 TTFT down, same SLOs): hypervolume of the feasible "
              f"trials as a share of the exhaustive Pareto front's (reference point: the worst throughput and "
              f"the worst TTFT of all feasible configurations), median over {min(result['seeds'], 10)} seeds:", "",
              "| sampler | " + " | ".join(f"after {k} trials" for k in budgets) + " |",
              "| --- | " + " | ".join("---:" for _ in budgets) + " |"]
    for r in mo["table"]:
        lines.append(f"| {r['sampler']} | " + " | ".join(f"{r[f'hv_share_at_{k}']:.3f}" for k in budgets) + " |")
    if result.get("demo"):
        d = result["demo"]
        lines += ["", f"Demo spec (`deployments/tuning/demo.yaml`): {d['configurations']:,} configurations, "
                  f"{d['feasible']:,} feasible, {d['within_5pct']:,} within 5% of the exhaustive optimum "
                  f"**{d['optimum']['value']:.1f} tok/s** ({d['optimum']['flags']})."]
    reused = result["exhaustive"].get("reused_measurements")
    sweep = (f"the benchmark space's sweep reused {reused} measurements saved by an earlier run (`--cache`)"
             if reused else f"{result['exhaustive']['seconds']:.0f} s of it the benchmark space's sweep")
    lines += ["", f"Measured by `PYTHONPATH=. .venv/bin/python bench/tuning.py` in {result['seconds']:.0f} s "
              f"({sweep})."]
    return "\n".join(lines) + "\n"


def summarize_sweep(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    feasible = sorted((r for r in rows if r["feasible"]), key=lambda r: -r["values"][0])
    optimum = feasible[0]["values"][0]
    return {"configurations": len(rows), "feasible": len(feasible), "seconds": round(seconds, 1),
            "within_3pct": sum(r["values"][0] >= optimum * (1 - WITHIN) for r in feasible),
            "within_5pct": sum(r["values"][0] >= optimum * 0.95 for r in feasible),
            "optimum": {"value": optimum, "flags": feasible[0]["flags"]},
            "top": [{"value": r["values"][0], "flags": r["flags"]} for r in feasible[:20]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-trials", type=int, default=400)
    ap.add_argument("--budgets", default="20,40")
    ap.add_argument("--skip-demo", action="store_true", help="do not sweep the demo spec's space")
    ap.add_argument("--cache", type=Path, help="a pickle of the benchmark space's measurements: read when "
                    "it exists, written after the sweep (a rerun then costs only the samplers' time)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    t0 = time.perf_counter()
    spec = load_spec()
    cache: dict[Any, Any] = {}
    if args.cache and args.cache.exists():
        cache = pickle.loads(args.cache.read_bytes())
        print(f"  reusing {len(cache)} measurements from {args.cache}", flush=True)
    steps = cached_steps(virtual_steps(), cache)
    print("exhaustive sweep of the benchmark space ...", flush=True)
    reused = len(cache)
    rows = exhaustive(spec, steps)
    ex = summarize_sweep(rows, time.perf_counter() - t0)
    ex["reused_measurements"] = reused
    print(f"  {ex['configurations']} configurations, {ex['feasible']} feasible, {ex['within_3pct']} within 3%, "
          f"optimum {ex['optimum']['value']:.1f} tok/s {ex['optimum']['flags']} ({ex['seconds']:.0f} s)", flush=True)
    if args.cache:
        args.cache.write_bytes(pickle.dumps(cache))
    print("single objective: trials to within 3% ...", flush=True)
    so = single_objective(spec, rows, steps, args.seeds, args.max_trials)
    budgets = [int(b) for b in args.budgets.split(",")]
    print("two objectives: hypervolume share ...", flush=True)
    mo = multi_objective(rows, steps, args.seeds, budgets)
    result = {
        "exhaustive": ex, "seeds": args.seeds, "max_trials": args.max_trials, "budgets": budgets,
        "single_objective": so, "multi_objective": mo,
        "gp_skipped": None if importlib.util.find_spec("torch") else
        "skipped: Optuna's GPSampler needs torch, which is not installed (and not a benchflow dependency)",
    }
    RESULTS.mkdir(exist_ok=True)
    if not args.skip_demo:
        print(f"exhaustive sweep of {DEMO.relative_to(ROOT)} ...", flush=True)
        t = time.perf_counter()
        demo = summarize_sweep(exhaustive(load_spec(demo_data()), cached_steps(virtual_steps(), {})),
                               time.perf_counter() - t)
        print(f"  {demo['configurations']} configurations, optimum {demo['optimum']['value']:.1f} tok/s "
              f"{demo['optimum']['flags']} ({demo['seconds']:.0f} s)", flush=True)
        result["demo"] = {k: v for k, v in demo.items() if k != "top"}
        (RESULTS / "tuning-demo-optimum.json").write_text(json.dumps(
            {"spec": str(DEMO.relative_to(ROOT)), **demo}, indent=2) + "\n")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (RESULTS / "tuning.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = markdown(result)
    (RESULTS / "tuning.md").write_text(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
