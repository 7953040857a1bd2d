"""What ``benchflow bench`` and its ``--sweep``/``--slo-capacity``/``--trace`` modes share: argument
types, ``--slo``, the open-file limit, the exit codes, and :func:`measure` (one cell)."""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path
from typing import Any

from benchflow.errors import BenchflowError

logger = logging.getLogger(__name__)

#: Requests sent when neither --requests nor --duration is given.
DEFAULT_REQUESTS = 100
#: Distinct prompts made for a run bounded by --duration only (cycled when more are needed).
DURATION_PROMPTS = 1000
#: Exit status when the run was measured but no measured request succeeded.
EXIT_NO_SUCCESS = 3
EXIT_CODES = {
    0: "measured; at least one request succeeded (the summary says whether the run is valid)",
    1: "the endpoint cannot be reached, or an output file cannot be written",
    2: "bad arguments (or the concurrency cannot fit under the open-file limit)",
    EXIT_NO_SUCCESS: "measured, but no request succeeded: the server's dominant error is printed",
}
#: File descriptors kept free besides one connection per request in flight.
FD_HEADROOM = 64


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


_SLO_ITEM = re.compile(r"^\s*([A-Za-z0-9_]+)\s*[:.]\s*([A-Za-z0-9_]+)\s*(?:<=|=)\s*(\S.*?)\s*$")


def parse_slo(text: str) -> dict[str, dict[str, float]]:
    """``'ttft:p99=200ms,tpot:p90=50ms'`` as the spec's ``slo`` (``{metric: {stat: seconds}}``),
    validated by the spec's own field (``ttft.p99<=200ms`` is accepted too). Raises
    :class:`~benchflow.errors.SpecError` naming every bad item."""
    from pydantic import TypeAdapter, ValidationError

    from benchflow.errors import SpecError
    from benchflow.spec import CampaignSpec

    slo: dict[str, dict[str, Any]] = {}
    problems = []
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise SpecError(["--slo: empty; write e.g. 'ttft:p99=200ms,tpot:p90=50ms'"])
    for item in items:
        m = _SLO_ITEM.match(item)
        if m is None:
            problems.append(f"--slo {item.strip()!r}: expected METRIC:STAT=DURATION, e.g. 'ttft:p99=200ms'")
            continue
        metric, stat, value = m.groups()
        if stat in slo.get(metric, {}):
            problems.append(f"--slo {item.strip()!r}: {metric}:{stat} is given twice")
            continue
        slo.setdefault(metric, {})[stat] = value
    if problems:
        raise SpecError(problems)
    try:
        return TypeAdapter(CampaignSpec.model_fields["slo"].annotation).validate_python(slo)
    except ValidationError as e:
        raise SpecError([_slo_message(err) for err in e.errors()]) from None


def _slo_message(err: dict[str, Any]) -> str:
    loc = [str(x) for x in err["loc"]]
    if err["type"] == "literal_error":  # an unknown key: the metric, or the stat under a metric
        what = "metric" if len(loc) == 2 else "stat"
        return f"--slo {':'.join(loc[:-1])}: unknown {what}; expected one of {err['ctx']['expected']}"
    msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return f"--slo {':'.join(loc)}: {msg}"


def slo_arg(text: str) -> dict[str, dict[str, float]]:
    """argparse type of ``--slo``: a bad value is a usage error (exit code 2) with the reason."""
    from benchflow.errors import SpecError

    try:
        return parse_slo(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError("; ".join(e.problems)) from None


def slo_line(summary: dict[str, Any], slo: dict[str, dict[str, float]]) -> str:
    """One line: the objectives, goodput and attainment, and the cell's own verdict."""
    goals = ", ".join(f"{m} {st} <= {sec * 1000:g} ms" for m, stats in slo.items() for st, sec in stats.items())
    goodput, attainment = summary.get("goodput"), summary.get("slo_attainment")
    text = (f"SLO ({goals}): goodput {'-' if goodput is None else f'{goodput:.3g}'} req/s, attainment "
            f"{'-' if attainment is None else f'{attainment:.1%}'} of successful requests")
    violations = summary.get("slo_violations") or []
    return text + ("; the run's own statistics meet it" if summary.get("slo_met") else
                   f"; missed: {'; '.join(violations)}" if violations else "")


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


class OpenFileLimitError(BenchflowError):
    """The requests in flight cannot fit under the open-file limit (exit code 2)."""


def raise_open_file_limit(needed: int) -> tuple[int, int | None]:
    """Raises the soft RLIMIT_NOFILE to the hard limit; returns ``(soft now, hard)``. Raises
    :class:`OpenFileLimitError` when ``needed`` descriptors still do not fit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return needed, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:  # e.g. an infinite hard limit the kernel caps lower
            logger.debug("could not raise the open-file limit to %s: %s", hard, e)
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise OpenFileLimitError(
            f"concurrency: {needed - FD_HEADROOM} requests in flight need about {needed} open files, but the "
            f"open-file limit is {soft} (hard limit {'unlimited' if hard == resource.RLIM_INFINITY else hard}); "
            "raise it (ulimit -n) or lower the concurrency")
    return soft, (None if hard == resource.RLIM_INFINITY else hard)


def no_success_message(summary: dict[str, Any]) -> str:
    """The one line printed when no measured request succeeded: the error counts and the
    server's dominant error message (``summary["dominant_error"]``)."""
    errors = summary.get("errors") or {}
    counts = ", ".join(f"{k}×{v}" for k, v in sorted(errors.items()))
    text = f"no request succeeded ({counts or 'none finished'})"
    dominant = summary.get("dominant_error")
    if dominant:
        text += f"; the server said {dominant['message']!r} ×{dominant['count']}"
    if summary.get("incomplete"):
        text += f"; {summary['incomplete']} cut off by --duration"
    return text


def measure(args: argparse.Namespace, load: Any, prompts: Any, requests: int | None,
            saturation: Any = None, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
    """One cell against ``args.url``: ``(LoadRun, summary)`` (the summary as ``bench`` prints it;
    ``saturation``: early stop on over-saturation, open loop only, marked as the runner does)."""
    import asyncio

    from benchflow.clients import run_cell_load
    from benchflow.loadgen import check_endpoint
    from benchflow.progress import RequestProgress
    from benchflow.records import dominant_error
    from benchflow.saturation import describe
    from benchflow.stats import summarize

    extra = {"saturation": saturation} if saturation is not None else {}

    async def go() -> Any:
        await check_endpoint(args.url, min(args.timeout, 10.0))
        # a live bar on a TTY (cleared at the end); nothing extra in a pipe or a log
        with RequestProgress(args.warmup + requests if requests is not None else None) as bar:
            return await run_cell_load(
                args.url, args.model, prompts, load, clients=args.clients, api=args.api,
                warmup_requests=args.warmup,
                max_requests=requests, max_duration_s=args.duration, request_timeout_s=args.timeout,
                temperature=args.temperature, ignore_eos=args.ignore_eos,
                seed=args.seed if seed is None else seed, on_request=bar, **extra,
            )

    result, client = asyncio.run(go())
    summary = summarize(result, slo=args.slo)
    summary["dominant_error"] = dominant_error(result.records)
    summary.update(client)
    summary["stop_reason"] = result.stop_reason
    if result.stop_reason == "saturated":
        summary["saturation"] = dict(result.stop_detail)
        reason = f"saturated: {describe(result.stop_detail)}"
        summary["invalid"] = f"{summary['invalid']}; {reason}" if summary.get("invalid") else reason
    return result, summary
