"""Client-added TTFT (`make bench`): what benchflow's load generator adds to a server's own TTFT,
with 1, 2 and 4 client processes, at closed-loop concurrency 256 and 1024.

The server is the lean streaming server (tests/support/lean_server.py: a bare epoll loop with
microsecond timers, so that the server's own queueing adds as little as it can to the request path;
``--aiohttp``: the aiohttp test server, tests/support/stream_server.py) in a SEPARATE process, paced like an engine:
first output 50 ms after its handler starts, then a token every 10 ms (16 tokens; ``--tokens 8-40``
draws each request's length instead: with equal lengths every slot of the closed loop answers at the
same instant and sends its next request in the same wave). It records, per prompt, when its handler
started (``h``) and when it wrote the first
output message (``w``), on ``perf_counter_ns`` (CLOCK_MONOTONIC: one clock for every process on
Linux; benchflow moves each client process's records onto the parent's clock as well). Every
request has its own prompt, so each client record (send ``s``, first token read ``f``) is matched
to the server's exactly. Per request:

- client TTFT = f - s; the server's own first-write time = w - h;
- **client-added TTFT = (f - s) - (w - h)** = request path (h - s: the client sending, loopback,
  the server accepting and reading the request) + response path (f - w: loopback, the client's
  event loop and SSE parsing);

both paths are reported apart, to say where the time goes. Any lateness of the server's own
first write is in ``w - h`` and so taken out. On a 2-core machine the server and the clients share
the cores, so the request path includes the server's own queueing when it is busy.

    PYTHONPATH=. .venv/bin/python bench/client_ttft.py [--quick] [--aiohttp] [--tokens 16 | --tokens 8-40]
        [--clients 1,2,4] [--concurrency 256,1024] [--out FILE]

Writes bench/results/client_ttft.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchflow import SCHEMA_VERSION  # noqa: E402
from benchflow.clients import run_cell_load  # noqa: E402
from benchflow.records import Prompt  # noqa: E402
from benchflow.spec import ConcurrencyLoad  # noqa: E402
from tests.support.lean_server import serve_lean_in_process  # noqa: E402
from tests.support.stream_server import StreamServerConfig, serve_in_process  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "client_ttft.json"
TTFT_MS, GAP_MS, TOKENS = 50.0, 10.0, 16


def _prompts(n: int, tag: str, tokens: tuple[int, int] = (TOKENS, TOKENS)) -> list[Prompt]:
    """``n`` distinct prompts; output lengths drawn uniformly from ``tokens`` (seeded), or all equal."""
    rng = random.Random(0)
    return [Prompt(text=f"{tag}-{k} hello world", input_tokens=3, max_tokens=rng.randint(*tokens)) for k in range(n)]


def _token_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


async def _cell(url: str, clients: int, concurrency: int, requests: int, tag: str,
                tokens: tuple[int, int] = (TOKENS, TOKENS)) -> dict:
    from bench.clients import server_cpu_s

    prompts = _prompts(concurrency + requests, tag, tokens)
    cpu0, t0 = server_cpu_s(), time.monotonic()
    run, verdict = await run_cell_load(url, "stream-test", prompts, ConcurrencyLoad(concurrency=concurrency),
                                       clients=clients, warmup_requests=concurrency, max_requests=requests,
                                       max_duration_s=300, request_timeout_s=60.0)
    server_busy = (server_cpu_s() - cpu0) / max(time.monotonic() - t0, 1e-9)
    with urllib.request.urlopen(url + "/first_writes", timeout=30) as r:
        server = json.loads(r.read())
    added, request_path, response_path, server_ttft, client_ttft = [], [], [], [], []
    steady: list[tuple[int, float]] = []  # (send time, added) to leave out the measured phase's first wave
    for rec in run.records:
        if rec.warmup or not rec.chunks or rec.error_class:
            continue
        hw = server.get(prompts[rec.request_id % len(prompts)].text)
        if hw is None:
            continue
        h, w = hw
        s, f = rec.start_ns, rec.chunks[0][0]
        added.append(((f - s) - (w - h)) / 1e6)
        steady.append((s, added[-1]))
        request_path.append((h - s) / 1e6)
        response_path.append((f - w) / 1e6)
        server_ttft.append((w - h) / 1e6)
        client_ttft.append((f - s) / 1e6)
    return {"clients": clients, "concurrency": concurrency, "matched": len(added),
            "measured": sum(1 for r in run.records if not r.warmup),
            "client_added_ms": _pct(added),
            # the measured phase starts with every slot sending at once (after the warm-up's last answer):
            # the same figure without that first wave of ``concurrency`` requests
            "client_added_after_first_wave_ms": _pct([a for _, a in sorted(steady)[concurrency:]]),
            "request_path_ms": _pct(request_path),
            "response_path_ms": _pct(response_path), "server_first_write_ms": _pct(server_ttft),
            "client_ttft_ms": _pct(client_ttft), "client_bound": verdict["client_bound"],
            "server_cpu_of_a_core": round(server_busy, 2),
            "client_cpu_of_a_core": [round(max(p.get("cpu_share") or 0.0, p.get("process_cpu_share") or 0.0), 2)
                                     for p in verdict["client"]["processes"]],
            "evidence": verdict["client"]["evidence"],
            "clock_error_bound_ns": (verdict["client"].get("clock") or {}).get("error_bound_ns")}


async def _main(clients: list[int], concurrencies: list[int], quick: bool, aiohttp: bool = False,
                tokens: tuple[int, int] = (TOKENS, TOKENS)) -> list[dict]:
    rows = []
    config = StreamServerConfig(ttft_s=TTFT_MS / 1e3, gap_s=GAP_MS / 1e3, record_first_writes=True)
    for c in concurrencies:
        requests = (2 if quick else 6) * c
        for n in clients:
            # a fresh server for each cell (its table holds one cell); the aiohttp one on epoll above ~900
            # connections (its select() loop takes about 1000 sockets)
            server = serve_in_process(config, epoll=c > 900) if aiohttp else serve_lean_in_process(config)
            with server as url:
                row = await _cell(url, n, c, requests, f"c{c}n{n}", tokens)
            rows.append(row)
            a = row["client_added_ms"]
            print(f"  c{c}, {n} client(s): added p50 {a['p50']} ms, p99 {a['p99']} ms "
                  f"({row['matched']}/{row['measured']} matched; client_bound {row['client_bound']})", flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    head = ("| concurrency | clients | client-added TTFT p50 / p99 (ms) | after the first wave p50 / p99 (ms) | "
            "request path p50 / p99 (ms) | response path p50 / p99 (ms) | server's own first write p50 / p99 (ms) | "
            "server CPU (cores) | each client's CPU (cores) | client_bound |")
    lines = [head, "|---:|---:|---|---|---|---|---|---:|---|---|"]
    for r in rows:
        def pp(k: str) -> str:
            return f"{r[k]['p50']} / {r[k]['p99']}"
        lines.append(f"| {r['concurrency']} | {r['clients']} | {pp('client_added_ms')} | "
                     f"{pp('client_added_after_first_wave_ms')} | {pp('request_path_ms')} | "
                     f"{pp('response_path_ms')} | {pp('server_first_write_ms')} | {r['server_cpu_of_a_core']} | "
                     f"{', '.join(str(c) for c in r['client_cpu_of_a_core'])} | "
                     f"{'yes' if r['client_bound'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 x concurrency requests per cell instead of 6 x")
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--concurrency", default="256,1024")
    ap.add_argument("--aiohttp", action="store_true", help="the aiohttp test server instead of the lean one")
    ap.add_argument("--tokens", default=str(TOKENS), help="output tokens per request: N, or LO-HI drawn uniformly "
                    "(equal lengths keep a closed loop's slots in lockstep: every wave sends at once)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows = asyncio.run(_main([int(x) for x in args.clients.split(",")],
                             [int(x) for x in args.concurrency.split(",")], args.quick, args.aiohttp,
                             _token_range(args.tokens)))
    result = {"schema_version": SCHEMA_VERSION, "benchmark": "client_ttft",
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]},
              "server": f"tests/support/{'stream_server.py (aiohttp)' if args.aiohttp else 'lean_server.py'} "
                        f"in another process, TTFT {TTFT_MS:g} ms, "
                        f"a token every {GAP_MS:g} ms, {args.tokens} output tokens",
              "command": "PYTHONPATH=. .venv/bin/python bench/client_ttft.py " + " ".join(argv or sys.argv[1:]),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(rows))
    print(f"\nload average {result['machine']['load_average_before_after']}; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
