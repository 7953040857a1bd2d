"""Load-generator scale-out (`make bench`): the most requests per second 1 vs 2 client processes drive.

Closed loop at concurrency 128, 16-token streams, 30,000 requests a cell, against a server in a SEPARATE
process: by default the lean zero-delay server (tests/support/lean_server.py: a bare epoll loop that writes
one cached answer per request, so that the server takes as little of the cores as it can), with ``--aiohttp``
the aiohttp test server (tests/support/stream_server.py, about as costly per request as the client),
with ``--sim`` the simulator (``benchflow.sim``) with a fast profile (``--time-scale 0.001``). Each figure is the
cell's ``request_throughput`` (successful requests / measurement window) with ``clients: 1`` and
``clients: 2`` (``benchflow.clients``), the better of two runs, and whether the cell was marked
``client_bound``. Prints the command, a markdown table and the ratio; writes
bench/results/clients.json. On a 2-core machine the server shares the two cores with the clients,
so the ratio is a lower bound on what a second client process gives on a bigger machine: with ``c``
µs of client CPU and ``s`` µs of server CPU per request, no number of clients gets past
``cores / (c + s)`` requests a second, which is printed with how much of it 2 clients reached
(``c`` from the 1-client cell, which runs in this process; ``s`` from the server process).

    .venv/bin/python bench/clients.py [--quick] [--sim | --aiohttp] [--dataset 'D(32,16)'] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchflow import SCHEMA_VERSION  # noqa: E402
from benchflow.clients import run_cell_load  # noqa: E402
from benchflow.spec import ConcurrencyLoad  # noqa: E402
from benchflow.stats import summarize  # noqa: E402
from benchflow.tables import render_table  # noqa: E402
from benchflow.workload import parse_dataset  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "clients.json"
DATASET = "D(32,16)"
CONCURRENCY = 128
#: Measured requests per cell: a window of 2-4 s (with 6,000, half a second, a pause of either process
#: moved the figure by 10-20%)
REQUESTS = 30_000


def server_cpu_s() -> float:
    """CPU seconds used so far by this process's child processes that serve (the server under test)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if any(m in " ".join(child.cmdline()) for m in ("lean_server", "stream_server", "benchflow.sim")):
                t = child.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def _cell(url: str, model: str, clients: int, requests: int, dataset: str = DATASET) -> dict:
    prompts = parse_dataset(dataset).generate(500, 0)
    own0, cpu0 = _own_cpu_s(), server_cpu_s()
    run, verdict = await run_cell_load(url, model, prompts, ConcurrencyLoad(concurrency=CONCURRENCY),
                                       clients=clients, warmup_requests=CONCURRENCY, max_requests=requests,
                                       max_duration_s=120, request_timeout_s=20.0)
    server_cpu, own_cpu = server_cpu_s() - cpu0, _own_cpu_s() - own0
    s = summarize(run)
    done = len(run.records)
    # one client runs in this process: its CPU per request (warm-up included, like the server's)
    client_us = round(own_cpu / done * 1e6, 1) if done and clients == 1 else None
    return {"clients": clients, "requests": requests, "request_throughput": s["request_throughput"],
            "server_cpu_us_per_request": round(server_cpu / done * 1e6, 1) if done else None,
            "client_cpu_us_per_request": client_us,
            "failed": s["failed"], "incomplete": s["incomplete"], "client_bound": verdict["client_bound"],
            "evidence": verdict["client"]["evidence"],
            "clock_error_bound_ns": (verdict["client"].get("clock") or {}).get("error_bound_ns")}


def _own_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


async def _measure(url: str, model: str, requests: int, runs: int, dataset: str = DATASET) -> list[dict]:
    best = []
    for clients in (1, 2):
        trials = [await _cell(url, model, clients, requests, dataset) for _ in range(runs)]
        best.append(max(trials, key=lambda t: t["request_throughput"] or 0.0))
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one run each (about 30 s)")
    server_kind = parser.add_mutually_exclusive_group()
    server_kind.add_argument("--sim", action="store_true", help="the simulator (fast profile) instead of the "
                                                                "lean zero-delay server")
    server_kind.add_argument("--aiohttp", action="store_true", help="the aiohttp test server "
                                                                    "(tests/support/stream_server.py) instead")
    parser.add_argument("--dataset", default=DATASET, help="prompts and output lengths (default: %(default)s: "
                        "short streams, where the per-request cost dominates; D(32,128): the per-token cost)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default: %(default)s)")
    args = parser.parse_args(argv)
    command = shlex.join([Path(sys.executable).name, "bench/clients.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}")
    requests, runs = (1500, 1) if args.quick else (REQUESTS, 2)
    if args.sim:
        from tests.support.sim_process import SimServer

        sim = SimServer("--time-scale", "0.001", "--max-model-len", "256")
        try:
            cells = asyncio.run(_measure(sim.url, "sim-model", requests, runs, args.dataset))
        finally:
            sim.stop()
        server = "benchflow.sim --time-scale 0.001, separate process"
    elif args.aiohttp:
        from tests.support.stream_server import StreamServerConfig, serve_in_process

        with serve_in_process(StreamServerConfig(ttft_s=0.0, gap_s=0.0)) as url:
            cells = asyncio.run(_measure(url, "bench", requests, runs, args.dataset))
        server = "tests/support/stream_server.py (aiohttp), zero delay, separate process"
    else:
        from tests.support.lean_server import serve_lean_in_process
        from tests.support.stream_server import StreamServerConfig

        with serve_lean_in_process(StreamServerConfig(ttft_s=0.0, gap_s=0.0)) as url:
            cells = asyncio.run(_measure(url, "bench", requests, runs, args.dataset))
        server = "tests/support/lean_server.py (epoll loop), zero delay, separate process"
    one, two = (c["request_throughput"] or 0.0 for c in cells)
    ratio = two / one if one else None
    # what the machine's cores allow, whatever the number of client processes: every request costs one
    # client ``client_us`` and the server ``server_us`` of CPU, and they share the cores
    client_us, server_us = cells[0]["client_cpu_us_per_request"], cells[1]["server_cpu_us_per_request"]
    cores = len(os.sched_getaffinity(0))
    ceiling = cores / ((client_us + server_us) / 1e6) if client_us and server_us else None
    result = {"schema_version": SCHEMA_VERSION, "benchmark": "clients", "command": command,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "load_average": os.getloadavg()},
              "server": server, "dataset": args.dataset, "concurrency": CONCURRENCY, "cells": cells,
              "ratio_2_over_1": ratio, "cores": cores, "ceiling_req_s": round(ceiling) if ceiling else None,
              "ceiling_ratio": round(ceiling / one, 2) if ceiling and one else None}
    rows = [(c["clients"], round(c["request_throughput"] or 0.0, 1), c["failed"], c["client_cpu_us_per_request"] or "-",
             c["server_cpu_us_per_request"], "yes" if c["client_bound"] else "no", "; ".join(c["evidence"]) or "-")
            for c in cells]
    print(render_table(rows, ["clients", "req/s", "failed", "client CPU µs/request", "server CPU µs/request",
                              "client_bound", "evidence"], markdown=True))
    print(f"\n2 clients / 1 client: {ratio:.2f}x" if ratio else "\nno ratio: 1 client completed nothing")
    if ceiling:
        print(f"what {cores} cores allow (client + server CPU per request): {ceiling:,.0f} req/s, "
              f"{ceiling / one:.2f}x the 1-client rate; 2 clients reached {two / ceiling:.0%} of it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
