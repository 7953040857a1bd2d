"""Trace replay precision (`make bench`): the send-time error of a Mooncake-style trace replayed
against the simulator in a SEPARATE process (``--time-scale 0.01``: near-zero service time).

A synthetic trace of ``--requests`` (default 1,000) Poisson arrivals at each rate, lengths 16-700
tokens, short outputs, ``hash_ids`` sharing a first block among 7 groups, is replayed with
``benchflow bench --trace`` semantics (:func:`benchflow.loadgen.run_load` with a
:class:`benchflow.trace_replay.TraceLoad`). The error of a request is its actual send time minus
its recorded timestamp (both from the replay's start); the acceptance target is p99 <= 5 ms.
Prints a markdown table (with the load average before and after each rate) and writes
bench/results/traces.json. The send path is described in docs/metrics.md ("Trace replay:
send-time error"). On a loaded machine the figure measures the machine's scheduling delay more
than the load generator. On the shared 2-core development machine (two CI suites running), before
the send-path work: p50 0.6-1.0 ms, p99 18-22 ms at load 7-8, and full garbage collections of
~0.1 s landing on sends (p99 up to 300 ms, 500 req/s falling behind by 170 ms). After it
(2026-11-29): p50 0.06-0.3 ms; p99 1.9 / 1.9 / 3.4 ms at 50 / 200 / 500 req/s (load 3.5-5) and
7.5 / 5.0 / 5.8 ms (load 7-8), but single runs of either version at 7-30 ms (and outliers of
100-270 ms) whenever the other suites took the cores: interleaved runs of the old and new send
paths on this machine could not be told apart at p99, only at p50. A quiet machine is needed for
the 5 ms figure.

    PYTHONPATH=. .venv/bin/python bench/traces.py [--requests N] [--rates 50,200,500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchflow.loadgen import run_load  # noqa: E402
from benchflow.trace_replay import send_errors_ms, trace_load  # noqa: E402
from benchflow.traces import TraceRequest, trace_prompts  # noqa: E402
from benchflow.workload import _WORDS  # noqa: E402


def make_trace(n: int, rate: float, seed: int = 1) -> list[TraceRequest]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate) * 1000
        ids = (i % 7,) + ((1000 + i,) if rng.random() < 0.5 else ())
        out.append(TraceRequest(round(t, 3), rng.randint(16, 700), rng.randint(1, 4), ids))
    return out


def start_sim() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "benchflow.sim", "--port", "0", "--model", "sim-model",
                             "--time-scale", "0.01"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        m = re.search(r"running on (http://[\d.]+:\d+)", line, re.I)
        if m:
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the simulator did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rates", default="50,200,500")
    args = ap.parse_args()
    proc, url = start_sim()
    rows = []
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            trace = make_trace(args.requests, rate)
            load_before = os.getloadavg()[0]
            run = asyncio.run(run_load(url, "sim-model", trace_prompts(trace, _WORDS), trace_load(trace),
                                       max_requests=len(trace), request_timeout_s=60))
            e = np.asarray(send_errors_ms(run.records))
            rows.append({"rate": rate, "requests": len(trace), "sent": int(e.size),
                         "ok": sum(r.succeeded for r in run.records),
                         "p50_ms": float(np.percentile(e, 50)), "p99_ms": float(np.percentile(e, 99)),
                         "max_ms": float(e.max()), "load_average": [load_before, os.getloadavg()[0]]})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"trace replay send-time error, {args.requests} requests, simulator --time-scale 0.01, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| rate (req/s) | sent | ok | p50 (ms) | p99 (ms) | max (ms) | load average |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rate']:g} | {r['sent']} | {r['ok']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} "
              f"| {r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |")
    out = ROOT / "bench" / "results" / "traces.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "cpu_count": os.cpu_count()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
