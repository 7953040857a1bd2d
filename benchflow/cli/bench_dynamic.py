"""``benchflow bench --sweep N`` and ``benchflow bench --slo-capacity SLO``: the campaign's
``sweep`` and ``slo_capacity`` load points (:mod:`benchflow.spec.dynamic`) for a one-off run
against any endpoint.

The same library code as in a campaign: the settings are validated by
:class:`~benchflow.spec.dynamic.SweepSettings` / :class:`~benchflow.spec.dynamic.SloCapacitySettings`,
the sweep's rates come from :func:`benchflow.engine.dynamic.sweep_rates` and the search is
:func:`benchflow.stats.capacity.search_capacity` with :func:`~benchflow.stats.capacity.attainment_of`
judging each probe. Every point or probe is one ``bench`` cell (:func:`benchflow.cli.bench_core.measure`)
of ``--requests`` measured requests (or ``--duration`` seconds); open-loop cells stop early
when the server no longer keeps up (``saturated``, as in a campaign; ``--no-early-stop``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from benchflow.errors import SpecError

logger = logging.getLogger(__name__)

#: Flags that only apply with --sweep (name in args, flag).
SWEEP_ONLY = (("saturating_concurrency", "--saturating-concurrency"), ("up_to", "--up-to"))
#: Flags that only apply with --slo-capacity.
CAPACITY_ONLY = (("attainment", "--attainment"), ("min_rate", "--min-rate"), ("max_rate", "--max-rate"),
                 ("precision", "--precision"), ("max_probes", "--max-probes"), ("repetitions", "--repetitions"))
#: Flags that only apply with --trace.
TRACE_ONLY = (("time_scale", "--time-scale"),)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from benchflow.cli.bench_core import _positive_float, _positive_int

    g = p.add_argument_group("--sweep and --slo-capacity")
    g.add_argument("--saturating-concurrency", type=_positive_int, default=None, metavar="C",
                   help="--sweep: closed-loop concurrency of the saturating run (default 128)")
    g.add_argument("--up-to", type=_positive_float, default=None, metavar="X",
                   help="--sweep: the highest rate as a multiple of the saturating run's rate (default 1)")
    g.add_argument("--attainment", type=_positive_float, default=None, metavar="A",
                   help="--slo-capacity: share of requests that must meet every objective (default 0.99)")
    g.add_argument("--min-rate", type=_positive_float, default=None, metavar="RPS",
                   help="--slo-capacity: lowest rate tried (required)")
    g.add_argument("--max-rate", type=_positive_float, default=None, metavar="RPS",
                   help="--slo-capacity: highest rate tried (required)")
    g.add_argument("--precision", type=_positive_float, default=None, metavar="P",
                   help="--slo-capacity: relative bracket width at which bisection stops (default 0.05)")
    g.add_argument("--max-probes", type=_positive_int, default=None, metavar="N",
                   help="--slo-capacity: probes over all repetitions; then the best bracket is reported")
    g.add_argument("--repetitions", type=_positive_int, default=None, metavar="N",
                   help="--slo-capacity: independent searches; 3 or more give a confidence interval (default 1)")
    g.add_argument("--time-scale", type=_positive_float, default=None, metavar="X",
                   help="--trace: multiply every recorded send offset by X (0.5 replays twice as fast; default 1)")
    g.add_argument("--no-early-stop", dest="early_stop", action="store_false",
                   help="--sweep/--slo-capacity: do not stop an open-loop cell early when the server "
                        "no longer keeps up")


def check_no_dynamic_flags(args: argparse.Namespace) -> None:
    """A sweep- or capacity-only flag without --sweep / --slo-capacity is a usage error."""
    given = [flag for name, flag in SWEEP_ONLY + CAPACITY_ONLY if getattr(args, name, None) is not None]
    if given:
        raise SpecError(f"{', '.join(given)}: only apply to --sweep or --slo-capacity")
    if getattr(args, "time_scale", None) is not None:
        raise SpecError("--time-scale: only applies to --trace")


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from benchflow.spec.dynamic import SloCapacitySettings, SweepSettings

    wrong = (SWEEP_ONLY if args.slo_capacity is not None else CAPACITY_ONLY) + TRACE_ONLY
    mode = "--slo-capacity" if args.slo_capacity is not None else "--sweep"
    given = [flag for name, flag in wrong if getattr(args, name, None) is not None]
    if given:
        raise SpecError(f"{', '.join(given)}: do not apply to {mode}")
    if args.slo_capacity is not None:
        missing = [f for f, v in (("--min-rate", args.min_rate), ("--max-rate", args.max_rate)) if v is None]
        if missing:
            raise SpecError(f"--slo-capacity needs {' and '.join(missing)}")
    common = {k: v for k, v in (("arrival", args.arrival), ("max_concurrency", args.max_concurrency)) if v is not None}
    try:
        if args.sweep is not None:
            extra = {k: v for k, v in (("burstiness", args.burstiness),
                                       ("saturating_concurrency", args.saturating_concurrency),
                                       ("up_to", args.up_to)) if v is not None}
            return SweepSettings(points=args.sweep, **common, **extra)
        if args.burstiness is not None:
            raise SpecError("--burstiness: does not apply to --slo-capacity (its probes are poisson or constant)")
        extra = {k: v for k, v in (("attainment", args.attainment), ("precision", args.precision),
                                   ("max_probes", args.max_probes)) if v is not None}
        slo = {m: {st: f"{sec!r}s" for st, sec in stats.items()} for m, stats in args.slo_capacity.items()}
        return SloCapacitySettings(slo=slo, min_rate=args.min_rate, max_rate=args.max_rate,
                                   **common, **extra)
    except ValidationError as e:
        raise SpecError([f"{mode} {'.'.join(map(str, err['loc'])) or 'settings'}: "
                         f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors()]) from None


def run_dynamic(args: argparse.Namespace) -> int:
    from benchflow.cli.bench_core import (DEFAULT_REQUESTS, FD_HEADROOM, OpenFileLimitError, _prompt_count,
                                     raise_open_file_limit)
    from benchflow.workload import parse_dataset

    settings = _settings(args)
    requests = args.requests if args.requests is not None or args.duration is not None else DEFAULT_REQUESTS
    bound = getattr(settings, "saturating_concurrency", None) or settings.max_concurrency
    if requests is not None:
        bound = min(bound or requests + args.warmup, requests + args.warmup)
    try:
        raise_open_file_limit((bound or 0) + FD_HEADROOM)
    except OpenFileLimitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prompts = parse_dataset(args.dataset).generate(_prompt_count(requests, args.warmup), args.seed)
    saturation = None
    if args.early_stop:
        from benchflow.saturation import SaturationConfig

        saturation = SaturationConfig()
    if args.sweep is not None:
        data = run_sweep(args, settings, prompts, requests, saturation)
        print(render_sweep(data, title=f"benchflow bench: {args.model} at {args.url}, sweep of {args.sweep} "
                                       f"points, dataset {args.dataset}"))
        ok = any((row["summary"].get("completed") or 0) > 0 for row in data["points"])
    else:
        data = run_capacity(args, settings, prompts, requests, saturation)
        print(render_capacity(data, title=f"benchflow bench: {args.model} at {args.url}, SLO capacity, "
                                          f"dataset {args.dataset}"))
        ok = any(p.get("n_requests") for p in data["probes"])
    if args.json_path:
        from benchflow.cli.bench_core import _write

        _write(args.json_path, lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n"))
    if args.records_path:
        logger.warning("--records is not written with --sweep or --slo-capacity (one run per point)")
    if not ok:
        from benchflow.cli.bench_core import EXIT_NO_SUCCESS

        print("error: no request succeeded at any point", file=sys.stderr)
        return EXIT_NO_SUCCESS
    return 0


# ---- sweep ---------------------------------------------------------------------------------------

def run_sweep(args: argparse.Namespace, s: Any, prompts: Any, requests: int | None,
              saturation: Any) -> dict[str, Any]:
    """The synchronous and saturating runs, then ``s.points`` open-loop rates between their
    measured request rates (:func:`benchflow.engine.dynamic.sweep_rates`)."""
    from benchflow.cli.bench_core import measure
    from benchflow.engine.dynamic import sweep_rates
    from benchflow.spec import ConcurrencyLoad, RateLoad

    points: list[dict[str, Any]] = []
    refs: dict[str, float | None] = {}
    for role, concurrency in (("sync", 1), ("saturating", s.saturating_concurrency)):
        _, summary = measure(args, ConcurrencyLoad(concurrency=concurrency), prompts, requests)
        refs[role] = summary.get("request_throughput") or None
        points.append({"label": "sync" if role == "sync" else "max", "role": role, "concurrency": concurrency,
                       "target_rate": None, "beyond_saturation": False, "summary": summary})
    data: dict[str, Any] = {"mode": "sweep", "settings": s.model_dump(), "sync_rate": refs["sync"],
                            "saturating_rate": refs["saturating"], "points": points}
    if not refs["sync"] or not refs["saturating"]:
        which = " and ".join(k for k, v in refs.items() if not v)
        data["message"] = f"the {which} run has no measured request rate; the open-loop points were not run"
        return data
    sat = float(refs["saturating"])
    for k, rate in enumerate(sweep_rates(float(refs["sync"]), sat, s.points, s.up_to), start=1):
        load = RateLoad(rate=rate, arrival=s.arrival, burstiness=s.burstiness, max_concurrency=s.max_concurrency)
        _, summary = measure(args, load, prompts, requests, saturation=saturation)
        points.append({"label": f"p{k}", "role": "point", "point": k, "target_rate": rate,
                       "beyond_saturation": rate > sat * (1 + 1e-6), "summary": summary})
    return data


def _flags(row: dict[str, Any]) -> str:
    s = row["summary"]
    flags = [f for f, on in (("beyond_saturation", row.get("beyond_saturation")),
                             ("saturated", s.get("stop_reason") == "saturated"),
                             ("client_bound", s.get("client_bound"))) if on]
    if s.get("invalid") and s.get("stop_reason") != "saturated":
        flags.append("invalid")
    if not s.get("completed"):
        flags.append("no_success")
    return ",".join(flags)


def _ms(summary: dict[str, Any], stat: str) -> Any:
    return (summary.get("ttft_ms") or {}).get(stat)


def render_sweep(data: dict[str, Any], title: str | None = None) -> str:
    """One row per point: target rate, achieved rate, output throughput, TTFT p50/p99, flags."""
    from benchflow.tables import render_table

    rows = [(row["label"], row.get("concurrency") or "", row["target_rate"],
             row["summary"].get("request_throughput"), row["summary"].get("output_throughput"),
             _ms(row["summary"], "p50"), _ms(row["summary"], "p99"), _flags(row)) for row in data["points"]]
    headers = ("point", "concurrency", "target (req/s)", "achieved (req/s)", "output (tok/s)", "TTFT p50 (ms)",
               "TTFT p99 (ms)", "flags")
    text = render_table(rows, headers)
    if data.get("message"):
        text += f"\nnote: {data['message']}"
    return f"{title}\n{text}" if title else text


# ---- slo capacity --------------------------------------------------------------------------------

def run_capacity(args: argparse.Namespace, s: Any, prompts: Any, requests: int | None,
                 saturation: Any) -> dict[str, Any]:
    """:func:`benchflow.stats.capacity.search_capacity`, each probe one open-loop cell judged by
    :func:`~benchflow.stats.capacity.attainment_of` (a saturated or invalid probe misses)."""
    from benchflow.cli.bench_core import measure
    from benchflow.spec import RateLoad
    from benchflow.stats.capacity import ProbeOutcome, attainment_of, search_capacity

    slo = {m: dict(stats) for m, stats in s.slo.items()}
    summaries: list[dict[str, Any]] = []

    def probe(rate: float, repetition: int) -> ProbeOutcome:
        rate = float(f"{rate:.6g}")
        load = RateLoad(rate=rate, arrival=s.arrival, max_concurrency=s.max_concurrency)
        run, summary = measure(args, load, prompts, requests, saturation=saturation,
                               seed=args.seed + 1000 * repetition)
        saturated = summary.get("stop_reason") == "saturated"
        attainment = None if summary.get("invalid") else attainment_of(run.records, slo)
        summaries.append({"rate_rps": rate, "repetition": repetition, "attainment": attainment, "summary": summary})
        logger.info("probe %.4g req/s (repetition %d): attainment %s%s", rate, repetition, attainment,
                    ", saturated" if saturated else "")
        n = int(summary.get("completed") or 0) + int(summary.get("failed") or 0)
        return ProbeOutcome(attainment=attainment, n_requests=n, saturated=saturated)

    result = search_capacity(probe, attainment=s.attainment, min_rate=s.min_rate, max_rate=s.max_rate,
                             precision=s.precision, repetitions=args.repetitions or 1, max_probes=s.max_probes,
                             seed=args.seed)
    data = result.to_dict()
    data.update(mode="slo_capacity", slo=slo, settings=s.model_dump(), probe_summaries=summaries)
    return data


def _g(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def render_capacity(data: dict[str, Any], title: str | None = None) -> str:
    """The capacity with its interval, status and method, then every probe."""
    from benchflow.tables import render_table

    goals = ", ".join(f"{m} {st} <= {sec * 1000:g} ms" for m, stats in data["slo"].items() for st, sec in stats.items())
    lines = [title] if title else []
    ci = (f", {data['confidence']:.0%} interval {_g(data['ci_low'])}-{_g(data['ci_high'])} req/s"
          if data.get("ci_low") is not None else ", no interval (3 or more --repetitions give one)")
    lines.append(f"SLO capacity ({goals}; attainment >= {data['target_attainment']:.4g}): "
                 f"{_g(data['capacity_rps'])} req/s{ci if data['capacity_rps'] is not None else ''}; "
                 f"status {data['status']}; {len(data['probes'])} probes")
    if data.get("bracket"):
        lines.append(f"bracket: met at {_g(data['bracket'][0])}, missed at {_g(data['bracket'][1])} req/s")
    if data.get("message"):
        lines.append(f"note: {data['message']}")
    lines.append(f"method: {data['method']}")
    rows = [(p["repetition"], p["rate_rps"], None if p["attainment"] is None else p["attainment"] * 100,
             p["n_requests"], "met" if p["met"] else "missed", "saturated" if p["saturated"] else "")
            for p in data["probes"]]
    lines.append(render_table(rows, ("repetition", "rate (req/s)", "attainment (%)", "requests", "SLO", "flags")))
    return "\n".join(lines)


# ---- trace replay --------------------------------------------------------------------------------

def run_trace(args: argparse.Namespace) -> int:
    """``--trace PATH``: the trace's requests (the first ``--requests``) at their recorded send
    times times ``--time-scale``, prompts built from ``hash_ids`` (:mod:`benchflow.traces`)."""
    from benchflow.cli.bench_core import (EXIT_NO_SUCCESS, FD_HEADROOM, OpenFileLimitError, _write, measure,
                                     no_success_message, raise_open_file_limit, slo_line)
    from benchflow.tables import render_summary
    from benchflow.trace_replay import trace_load
    from benchflow.traces import read_trace, trace_prompts
    from benchflow.workload import _WORDS

    given = [flag for name, flag in SWEEP_ONLY + CAPACITY_ONLY if getattr(args, name, None) is not None]
    given += [flag for flag, v in (("--arrival", args.arrival), ("--burstiness", args.burstiness),
                                   ("--warmup", args.warmup or None), ("--dataset", args.dataset != "D(128,128)" or None))
              if v is not None]
    if given:
        raise SpecError(f"{', '.join(given)}: do not apply to --trace (the trace sets the prompts and send times)")
    trace = read_trace(args.trace)
    if args.requests is not None:
        trace = trace[:args.requests]
    load = trace_load(trace, args.time_scale or 1.0, max_concurrency=args.max_concurrency)
    prompts = trace_prompts(trace, _WORDS, seed=args.seed)
    try:
        raise_open_file_limit((args.max_concurrency or len(trace)) + FD_HEADROOM)
    except OpenFileLimitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run, summary = measure(args, load, prompts, len(trace))
    summary["trace"] = trace_summary(run.records, args.trace, load)
    print(render_summary(summary, title=f"benchflow bench: {args.model} at {args.url}, trace {args.trace} "
                                        f"({len(trace)} requests, time scale {load.time_scale:g})"))
    print(trace_line(summary["trace"]))
    if args.slo:
        print(slo_line(summary, args.slo))
    if args.json_path:
        _write(args.json_path, lambda p: p.write_text(json.dumps(summary, indent=2, default=str) + "\n"))
    if args.records_path:
        from benchflow.records import records_to_frame

        _write(args.records_path, lambda p: records_to_frame(run.records).to_parquet(p, index=False))
    if not summary.get("completed"):
        print(f"error: {no_success_message(summary)}", file=sys.stderr)
        return EXIT_NO_SUCCESS
    return 0


def trace_summary(records: Any, path: Any, load: Any) -> dict[str, Any]:
    """The replay's send-time error (actual minus recorded send time, ms) and its settings."""
    from benchflow.trace_replay import trace_summary as summary

    return summary(records, path, load)


def trace_line(t: dict[str, Any]) -> str:
    e = t["send_error_ms"]
    return (f"trace replay: {t['sent']} of {t['requests']} requests sent over {t['span_s']:.3g} s; send-time error "
            f"vs the recorded times p50 {_g(e['p50'])} ms, p99 {_g(e['p99'])} ms, max {_g(e['max'])} ms")
