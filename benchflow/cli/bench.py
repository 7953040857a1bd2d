"""``benchflow bench``: a one-off load test against any OpenAI-compatible endpoint.

    benchflow bench --url http://127.0.0.1:8000 --model NAME --dataset 'D(128,128)' \\
        (--concurrency 16 | --rate 20 [--arrival poisson|gamma|constant] [--burstiness B]
         [--max-concurrency N]) --requests 500 [--duration S] [--warmup 20]
        [--api completions|chat] [--timeout S] [--seed N] [--json out.json] [--records out.parquet]

Prints the per-cell summary as a table; ``--json`` writes it (the same shape as a campaign
cell's summary) and ``--records`` writes every request's raw facts as parquet. An endpoint that
cannot be reached is reported in one line (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Requests sent when neither --requests nor --duration is given.
DEFAULT_REQUESTS = 100
#: Distinct prompts made for a run bounded by --duration only (cycled when more are needed).
DURATION_PROMPTS = 1000


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="one-off streaming load test against an OpenAI-compatible endpoint",
        description="Send streaming requests to an OpenAI-compatible endpoint (closed loop with "
                    "--concurrency, or open loop with --rate) and print the per-cell summary.",
    )
    p.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="model name sent in every request")
    p.add_argument("--dataset", default="D(128,128)",
                   help="prompt lengths, e.g. 'D(128,128)', 'N(480,240)/(300,150)', 'U(50,150)/(20,80)' "
                        "(default: %(default)s)")
    load = p.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=_positive_int, metavar="N",
                      help="closed loop: number of concurrent workers")
    load.add_argument("--rate", type=_positive_float, metavar="RPS", help="open loop: target requests per second")
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
    p.add_argument("--api", choices=("completions", "chat"), default="completions", help="(default: %(default)s)")
    p.add_argument("--timeout", type=_positive_float, default=60.0, metavar="S",
                   help="per-request timeout in seconds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts and the open-loop schedule")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature (default: %(default)s)")
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="let the model stop early (by default ignore_eos and min_tokens=max_tokens are sent)")
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


def _prompt_count(requests: int | None, warmup: int) -> int:
    # Duration only: a fixed pool of prompts, cycled by the load generator.
    return (requests if requests is not None else DURATION_PROMPTS) + warmup


def _write(path: Path, write: Any) -> None:
    from benchflow.errors import StorageError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e


def run(args: argparse.Namespace) -> int:
    import asyncio

    from benchflow.loadgen import check_endpoint, run_load
    from benchflow.records import records_to_frame
    from benchflow.stats import summarize
    from benchflow.tables import render_summary
    from benchflow.workload import parse_dataset

    load = _load_point(args)
    requests = args.requests if args.requests is not None or args.duration is not None else DEFAULT_REQUESTS
    prompts = parse_dataset(args.dataset).generate(_prompt_count(requests, args.warmup), args.seed)

    async def go() -> Any:
        await check_endpoint(args.url, min(args.timeout, 10.0))
        return await run_load(
            args.url, args.model, prompts, load, api=args.api, warmup_requests=args.warmup,
            max_requests=requests, max_duration_s=args.duration, request_timeout_s=args.timeout,
            temperature=args.temperature, ignore_eos=args.ignore_eos, seed=args.seed,
        )

    result = asyncio.run(go())
    summary = summarize(result)
    title = f"benchflow bench: {args.model} at {args.url}, {load.label}, dataset {args.dataset}"
    print(render_summary(summary, title=title))
    if args.json_path:
        _write(args.json_path, lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    if args.records_path:
        _write(args.records_path, lambda p: records_to_frame(result.records).to_parquet(p, index=False))
    logger.info("bench done: stop reason %s, %d requests", result.stop_reason, len(result.records))
    return 0
