"""``benchflow bench``: a one-off load test against any OpenAI-compatible endpoint.

    benchflow bench --url http://127.0.0.1:8000 --model NAME --dataset 'D(128,128)' \\
        (--concurrency 16 | --rate 20 [--arrival poisson|gamma|constant] [--burstiness B]
         [--max-concurrency N]) --requests 500 [--duration S] [--warmup 20]
        [--clients N] [--api completions|chat] [--timeout S] [--seed N] [--json out.json] [--records out.parquet]
        [--slo 'ttft:p99=200ms,tpot:p90=50ms']
    benchflow bench ... --trace mooncake.jsonl [--time-scale X] [--requests N]
    benchflow bench ... --sweep N [--saturating-concurrency C] [--up-to X]
    benchflow bench ... --slo-capacity 'ttft.p99<=500ms' --min-rate R --max-rate R [--attainment 0.99]
        [--precision 0.05] [--max-probes N] [--repetitions N]

Prints the per-cell summary as a table; ``--json`` writes it (the same shape as a campaign
cell's summary) and ``--records`` writes every request's raw facts as parquet. ``--slo`` takes the
campaign spec's ``slo`` (the same metrics, stats and units) and adds goodput and SLO attainment. Exit codes are
listed in :data:`EXIT_CODES` (and in ``--help``): an endpoint that cannot be reached is reported
in one line (1); a run where no measured request succeeded prints the server's dominant error
message with its count (3).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from benchflow.cli.bench_core import (  # noqa: F401 (re-exported: tests and callers import them from here)
    DEFAULT_REQUESTS, DURATION_PROMPTS, EXIT_CODES, EXIT_NO_SUCCESS, FD_HEADROOM, OpenFileLimitError,
    _non_negative_int, _positive_float, _positive_int, _prompt_count, _write, measure, no_success_message,
    parse_slo, raise_open_file_limit, slo_arg, slo_line)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="one-off streaming load test against an OpenAI-compatible endpoint",
        description="Send streaming requests to an OpenAI-compatible endpoint (closed loop with "
                    "--concurrency, or open loop with --rate) and print the per-cell summary.",
        epilog="exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
    )
    p.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="model name sent in every request")
    p.add_argument("--dataset", default="D(128,128)",
                   help="prompt lengths, e.g. 'D(128,128)', 'N(480,240)/(300,150)', 'U(50,150)/(20,80)', or a file: "
                        "'jsonl:PATH', 'sharegpt:PATH', 'mooncake:PATH' (a trace's prompts, without its times) "
                        "(default: %(default)s)")
    load = p.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=_positive_int, metavar="N",
                      help="closed loop: number of concurrent workers")
    load.add_argument("--rate", type=_positive_float, metavar="RPS", help="open loop: target requests per second")
    load.add_argument("--trace", type=Path, metavar="PATH",
                      help="replay a Mooncake-style trace (JSONL: timestamp ms, input_length, output_length, "
                           "hash_ids) at its recorded send times; see --time-scale")
    load.add_argument("--sweep", type=_positive_int, metavar="N",
                      help="latency-throughput curve: a synchronous run (concurrency 1), a saturating run, then "
                           "N open-loop rates spread between their measured request rates")
    load.add_argument("--slo-capacity", type=slo_arg, metavar="SLO",
                      help="the highest open-loop rate at which --attainment of requests meet every objective, "
                           "e.g. 'ttft.p99<=500ms,tpot.p99<=50ms' (bracket from --min-rate, then bisect)")
    p.add_argument("--arrival", choices=("poisson", "gamma", "constant"), default=None,
                   help="open-loop inter-arrival distribution (default: poisson)")
    p.add_argument("--burstiness", type=_positive_float, default=None, metavar="B",
                   help="open loop, gamma shape: 1 is Poisson, below 1 burstier (default: 1)")
    p.add_argument("--max-concurrency", type=_positive_int, default=None, metavar="N",
                   help="open loop: at most this many requests in flight")
    p.add_argument("--requests", type=_positive_int, default=None, metavar="N",
                   help=f"measured requests, warm-up excluded (default {DEFAULT_REQUESTS} unless --duration)")
    p.add_argument("--duration", type=_positive_float, default=None, metavar="S",
                   help="bound on the run in seconds (warm-up included)")
    p.add_argument("--warmup", type=_non_negative_int, default=0, metavar="N",
                   help="warm-up requests, sent first and left out of the statistics")
    p.add_argument("--clients", type=_positive_int, default=1, metavar="N",
                   help="split the load over N client processes, one core each (default: %(default)s); "
                        "use it when the summary says client_bound")
    p.add_argument("--api", choices=("completions", "chat"), default="completions", help="(default: %(default)s)")
    p.add_argument("--timeout", type=_positive_float, default=60.0, metavar="S",
                   help="per-request timeout in seconds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts and the open-loop schedule")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature (default: %(default)s)")
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="let the model stop early (by default ignore_eos and min_tokens=max_tokens are sent)")
    p.add_argument("--slo", type=slo_arg, default=None, metavar="SLO",
                   help="service-level objectives as in a spec's slo, comma-separated METRIC:STAT=DURATION, "
                        "e.g. 'ttft:p99=200ms,tpot:p90=50ms' (metrics ttft, tpot, itl, e2e; stats mean, p50, "
                        "p90, p95, p99; a unit is required): prints goodput and SLO attainment")
    from benchflow.cli.bench_dynamic import add_arguments

    add_arguments(p)
    p.add_argument("--json", dest="json_path", type=Path, metavar="PATH", help="write the summary as JSON")
    p.add_argument("--records", dest="records_path", type=Path, metavar="PATH",
                   help="write every request's raw facts as parquet")
    p.set_defaults(func=run)


def _load_point(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from benchflow.errors import SpecError
    from benchflow.spec import ConcurrencyLoad, RateLoad

    open_only = [flag for flag, value in (("--arrival", args.arrival), ("--burstiness", args.burstiness),
                                          ("--max-concurrency", args.max_concurrency)) if value is not None]
    if args.concurrency is not None and open_only:
        raise SpecError(f"{', '.join(open_only)}: only apply to an open loop (--rate), not to --concurrency")
    try:
        if args.concurrency is not None:
            return ConcurrencyLoad(concurrency=args.concurrency)
        return RateLoad(rate=args.rate, arrival=args.arrival or "poisson",
                        burstiness=1.0 if args.burstiness is None else args.burstiness,
                        max_concurrency=args.max_concurrency)
    except ValidationError as e:
        raise SpecError([f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]) from e


def _in_flight_bound(args: argparse.Namespace, requests: int | None) -> int | None:
    bound = args.concurrency if args.concurrency is not None else args.max_concurrency
    if bound is None and requests is not None:
        bound = requests + args.warmup  # an open loop can have every request in flight at once
    if bound is not None and requests is not None:
        bound = min(bound, requests + args.warmup)
    return bound


def run(args: argparse.Namespace) -> int:
    from benchflow.records import records_to_frame
    from benchflow.tables import render_summary
    from benchflow.workload import parse_dataset

    if args.trace is not None:
        from benchflow.cli.bench_dynamic import run_trace

        return run_trace(args)
    if args.sweep is not None or args.slo_capacity is not None:
        from benchflow.cli.bench_dynamic import run_dynamic

        return run_dynamic(args)
    from benchflow.cli.bench_dynamic import check_no_dynamic_flags

    check_no_dynamic_flags(args)
    load = _load_point(args)
    requests = args.requests if args.requests is not None or args.duration is not None else DEFAULT_REQUESTS
    bound = _in_flight_bound(args, requests)
    try:
        raise_open_file_limit(bound + FD_HEADROOM if bound is not None else FD_HEADROOM)
    except OpenFileLimitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prompts = parse_dataset(args.dataset).generate(_prompt_count(requests, args.warmup), args.seed)
    result, summary = measure(args, load, prompts, requests)
    title = f"benchflow bench: {args.model} at {args.url}, {load.label}, dataset {args.dataset}"
    print(render_summary(summary, title=title))
    if args.slo:
        print(slo_line(summary, args.slo))
    if summary["client_bound"]:
        print(f"warning: client_bound: {'; '.join(summary['client']['evidence'])}; "
              f"{summary['client']['suggestion']}", file=sys.stderr)
    if args.json_path:
        _write(args.json_path, lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    if args.records_path:
        _write(args.records_path, lambda p: records_to_frame(result.records).to_parquet(p, index=False))
    logger.info("bench done: stop reason %s, %d requests", result.stop_reason, len(result.records))
    if not summary.get("completed"):
        print(f"error: {no_success_message(summary)}", file=sys.stderr)
        return EXIT_NO_SUCCESS
    return 0
