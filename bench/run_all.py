"""`make bench`: runs every benchmark in sequence and prints a markdown summary.

1. bench/loadgen_capacity.py: the load one benchflow client process can drive
   (-> bench/results/loadgen.json);
2. bench/orchestration_overhead.py: the campaign flow's overhead per cell and the peak memory
   of a 12-cell `benchflow run` (-> bench/results/orchestration.json);
3. bench/fuzz_spec.py: 10,000 fuzzed hostile specs through the spec loader; tracebacks and inputs
   over 5 s, goal 0 and 0 (-> bench/results/fuzz_spec.json; about 2 minutes).

The summary goes to stdout and to bench/results/summary.md, the headline figures with the
date, machine and load average to bench/results/summary.json. A benchmark that fails is
reported and the others still run; the exit status is 1 when any failed. It takes about
1-1.5 minutes on a 2-core machine (the load-generator search is capped at 60 s, the campaign at 240 s).

    .venv/bin/python bench/run_all.py [--quick] [--only loadgen|orchestration]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _f(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def loadgen_rows(r: dict) -> list[tuple[str, str]]:
    rate = _f(r["sustained_rate_rps"], 0)
    if r["sustained_rate_rps"] is None and r["rate_trials"]:
        first = r["rate_trials"][0]
        rate = (f"none found: the first trial ({_f(first['target_rps'], 0)} req/s) failed, client lag p99 "
                f"{_f(first['client_lag_p99_ms'])} ms, {first['failed']} failed, {first['incomplete']} incomplete")
    rows = [("load generator: sustained open-loop rate, one process (req/s, Poisson, 16-token streams)", rate)]
    for t in r["ttft"]:
        added = t["ttft_added_ms"]
        rows.append((f"load generator: TTFT added at concurrency {t['concurrency']}, {t['server']}: p50 / p99 (ms)",
                     f"{_f(added.get('p50'))} / {_f(added.get('p99'))}"))
    return rows


def orchestration_rows(r: dict) -> list[tuple[str, str]]:
    a, mem = r["figures"], r["memory"]
    rows = [
        (f"campaign of {a['cells']} cells: `benchflow run` wall time (s, ephemeral Prefect server included)",
         _f(a["command"]["total_s"])),
        ("campaign: flow run duration (s, Prefect state timestamps)", _f(a["flow_run"]["total_s"])),
        ("campaign: sum of cell windows / sum of backend start-ups (s)",
         f"{_f(a['sum_cell_windows_s'])} / {_f(a['sum_backend_startups_s'])}"),
        ("orchestration overhead per cell, flow run (s)", _f(a["flow_run"]["overhead_per_cell_s"], 3)),
        ("orchestration overhead per cell, whole command (s)", _f(a["command"]["overhead_per_cell_s"], 3)),
        ("  of the command: before the flow run starts (imports, ephemeral server start-up) (s)",
         _f(a["command"]["before_flow_run_s"])),
    ]
    for role in ("benchflow run", "prefect server (ephemeral)", "simulator"):
        if role in mem:
            rows.append((f"peak RSS, {role} (MiB)", _f(mem[role]["peak_rss_mib_max"], 0)))
    return rows


def fuzz_rows(r: dict) -> list[tuple[str, str]]:
    return [(f"spec fuzz: {r['inputs']:,} hostile specs: tracebacks / inputs over {r['slow_s']:g} s (goal 0 / 0)",
             f"{r['tracebacks']} / {r['over_slow_s']}")]


#: name -> (script, argv for it, headline rows of its result)
BENCHMARKS: dict[str, tuple[str, Callable[[argparse.Namespace], list[str]], Callable[[dict], list]]] = {
    "loadgen": ("loadgen_capacity", lambda a: ["--quick"] if a.quick else [], loadgen_rows),
    "orchestration": ("orchestration_overhead", lambda a: [], orchestration_rows),
    "fuzz_spec": ("fuzz_spec", lambda a: ["--n", "1000"] if a.quick else [], fuzz_rows),
}


def run_one(name: str, args: argparse.Namespace) -> dict:
    script, argv, rows = BENCHMARKS[name]
    print(f"\n## {name} ({script}.py)\n", flush=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        result = _load(script).main(argv(args))
        entry = {"ok": True, "rows": rows(result)}
    except Exception as e:  # noqa: BLE001 - a failed benchmark is reported; the others still run
        traceback.print_exc()
        entry = {"ok": False, "error": f"{type(e).__name__}: {e}", "rows": []}
    entry.update(name=name, script=f"bench/{script}.py", took_s=round(time.perf_counter() - t0, 1),
                 loadavg_1m_before=round(load_before, 2), loadavg_1m_after=round(os.getloadavg()[0], 2))
    return entry


def _python() -> str:
    exe = Path(sys.executable)
    return str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else exe.name


def summary_markdown(summary: dict) -> str:
    from benchflow.tables import render_table

    rows = [row for b in summary["benchmarks"] for row in b["rows"]]
    head = (f"Measured {summary['measured_at']} with `{summary['command']}` on {summary['machine']['cpus']} CPU cores "
            f"({summary['machine']['platform']}, Python {summary['machine']['python']}); "
            f"1-minute load average {summary['loadavg_1m_before']} before, {summary['loadavg_1m_after']} after.")
    lines = [head, "", render_table(rows, ["figure", "value"], markdown=True)]
    for b in summary["benchmarks"]:
        status = "ok" if b["ok"] else f"FAILED: {b['error']}"
        lines.append(f"- {b['script']}: {status}, {b['took_s']} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter load-generator trials")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only this benchmark")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    t0, load_before = time.perf_counter(), os.getloadavg()[0]
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    benchmarks = [run_one(name, args) for name in names]
    summary = {
        "measured_at": measured_at,
        "command": " ".join([_python(), "bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "loadavg_1m_before": round(load_before, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "took_s": round(time.perf_counter() - t0, 1), "benchmarks": benchmarks,
    }
    markdown = summary_markdown(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "summary.md").write_text(markdown)
    print("\n# Summary\n\n" + markdown + f"\nall benchmarks took {summary['took_s']} s; written to {RESULTS}/")
    return 0 if all(b["ok"] for b in benchmarks) else 1


if __name__ == "__main__":
    sys.exit(main())
