"""Runs one cell: samplers (server ``/metrics``, NVML) alongside the load generator, then the
summary. Pure library code: the Prefect task around it only sets policy and logs.

A cell *fails* (status ``failed``, with a reason) when the backend died during it, when the
client could not reach the endpoint, or when not a single request succeeded; the reason then
names the server's dominant error message and its count. A cell is ``stalled`` when requests
were in flight and none had an output token for ``limits.stall_after_s`` (the backend answers
but no longer serves: callers treat it as dead), and ``cancelled`` when the caller's
``should_stop`` returned a reason. An open-loop cell is ``saturated`` when
:mod:`benchflow.saturation` found that the server no longer keeps up (``limits.saturation``): it
is stopped early, its summary carries the evidence (``saturation``) and an ``invalid`` reason, so
that aggregates and comparisons leave it out as they leave out invalid cells. Saturation never
hides an error: a dead backend, a cell with no success and an error rate above
``limits.max_error_rate`` win over it. Its raw records and samples are kept either way: a failed
cell is data too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from benchflow import SCHEMA_VERSION
from benchflow.agentic import agentic_summary, tasks_frame
from benchflow.asyncrun import run_sync
from benchflow.errors import EndpointUnreachableError
from benchflow.records import LoadRun, dominant_error, records_to_frame
from benchflow.saturation import SaturationConfig, describe

log = logging.getLogger(__name__)

#: The gauge whose time above a threshold defines the active window (METRICS.md).
ACTIVE_GAUGE = "vllm:kv_cache_usage_perc"
#: ``limits.stall_after_s`` when a spec has no such field.
DEFAULT_STALL_AFTER_S = 30.0


@dataclass
class CellOutcome:
    cell_id: str
    backend: str
    load_label: str
    repetition: int
    status: str  # "completed" | "failed" | "stalled" | "cancelled" | "saturated" | "stuck" | "retry_storm"
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    run: LoadRun | None = None
    summary: dict[str, Any] | None = None
    server_samples: pd.DataFrame | None = None
    gpu_samples: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def artifacts(self) -> dict[str, bytes]:
        """The cell's raw files, named as in the artifact layout."""
        out: dict[str, bytes] = {}
        if self.run is not None:
            out["requests.parquet"] = _parquet(records_to_frame(self.run.records))
        if self.run is not None and (tasks := tasks_frame(self.run)) is not None:
            out["tasks.parquet"] = _parquet(tasks)
        if self.server_samples is not None:
            out["server_metrics.parquet"] = _parquet(self.server_samples)
        if self.gpu_samples is not None:
            out["gpu.parquet"] = _parquet(self.gpu_samples)
        if self.summary is not None:
            out["summary.json"] = json.dumps(self.summary, indent=2, sort_keys=True, default=str).encode()
        out.update(self.extra.get("artifacts", {}))  # e.g. an external driver's driver.log (benchflow.driver)
        return out


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def prompt_count(workload: Any) -> int:
    """How many distinct prompts a cell needs; the load generator cycles them beyond that."""
    return int(workload.warmup_requests) + int(workload.max_requests or 1000)


async def measure_cell(
    spec: Any,
    cell: Any,
    base_url: str,
    *,
    alive: Callable[[], str | None] = lambda: None,
    should_stop: Callable[[], str | None] = lambda: None,
    nvml: Any = None,
    gpu_indices: list[int] | None = None,
    scrape_interval_s: float = 1.0,
    replica_urls: Mapping[str, str] | None = None,
) -> CellOutcome:
    """Measures ``cell`` against ``base_url``. Never raises for a failed cell: returns it.

    ``alive`` says why the backend is dead (or ``None``); it is asked when the load ends.
    ``should_stop`` is polled while the load runs (in a worker thread, a few times a second);
    when it returns a reason the load stops at once, the records so far are kept, and the
    outcome is ``cancelled`` with that reason as its error. ``replica_urls`` (label -> URL, the
    replicas behind a router): their ``/metrics`` are sampled instead of ``base_url``'s, each row
    labelled ``replica``, and ``alive`` is also asked while the load runs (once a second), so a
    replica that dies stops the cell at once (failed, naming the replica) instead of letting the
    router carry on with the others.
    """
    from benchflow.clients import run_cell_load
    from benchflow.agentic import run_agentic_load
    from benchflow.loadgen import check_endpoint
    from benchflow.metrics.prometheus import PrometheusScraper
    from benchflow.workload import make_prompts

    wl = spec.workload
    if replica_urls:  # behind a router the load may go on with a replica dead: stop the cell when a part dies
        should_stop = stop_when_dead(should_stop, alive)
    started = datetime.now(UTC)
    base = dict(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                repetition=cell.repetition, started_at=started)
    try:
        await check_endpoint(base_url, timeout_s=10.0)
    except EndpointUnreachableError as e:
        return CellOutcome(**base, status="failed", finished_at=datetime.now(UTC), error=str(e))

    if getattr(wl, "driver", None) is not None:  # an external driver makes the load (benchflow.driver)
        from benchflow.driver import measure_driver_cell

        outcome = await measure_driver_cell(
            spec, cell, base_url, CellOutcome(**base, status="completed", finished_at=started), alive=alive,
            should_stop=should_stop, gpu=_gpu_sampler(nvml, gpu_indices, scrape_interval_s),
            window_of=active_window_bounds, scrape_interval_s=scrape_interval_s, replica_urls=replica_urls)
        outcome.summary.update(_by_replica(outcome.server_samples))
        return outcome
    load, counts = cell.load_point, {"warmup_requests": wl.warmup_requests, "max_requests": wl.max_requests}
    if getattr(load, "mode", None) == "trace":  # a recorded trace's prompts and send times (benchflow.trace_replay)
        from benchflow.errors import SpecError
        from benchflow.trace_replay import replay_of

        try:
            load, prompts = replay_of(cell.load_point, cell.seed)
        except SpecError as e:
            return CellOutcome(**base, status="failed", finished_at=datetime.now(UTC),
                               error="trace: " + "; ".join(e.problems))
        counts = {"warmup_requests": 0, "max_requests": len(prompts)}
    else:
        prompts = make_prompts(wl, prompt_count(wl), cell.seed)
    scrapers = [PrometheusScraper.for_endpoint(url, interval_s=scrape_interval_s, extra_labels={"replica": label})
                for label, url in (replica_urls or {}).items()] or [
                PrometheusScraper.for_endpoint(base_url, interval_s=scrape_interval_s)]
    gpu = _gpu_sampler(nvml, gpu_indices, scrape_interval_s)
    async with contextlib.AsyncExitStack() as stack:
        for scraper in scrapers:
            await stack.enter_async_context(scraper.running())
        if gpu:
            await stack.enter_async_context(gpu.running())
        load_fn = run_cell_load if getattr(wl, "agentic", None) is None else partial(run_agentic_load, spec=wl.agentic)
        run, client = await load_fn(
            base_url, spec.model.name, prompts, load, clients=getattr(wl, "clients", 1), api=wl.api, **counts,
            max_duration_s=wl.max_duration_s, request_timeout_s=wl.request_timeout_s,
            temperature=wl.temperature, ignore_eos=wl.ignore_eos, seed=cell.seed,
            stall_after_s=stall_after_s(spec), should_stop=should_stop, saturation=saturation_config(spec),
        )
    outcome = CellOutcome(**base, status="completed", finished_at=datetime.now(UTC), run=run,
                          server_samples=_server_frame(scrapers), gpu_samples=gpu.frame() if gpu else None)
    outcome.summary = summarize_cell(spec, outcome)
    outcome.summary.update(client)  # client_bound + the client's evidence (benchflow.clients)
    if load is not cell.load_point:  # the send-time error of a trace replay
        from benchflow.trace_replay import trace_summary

        outcome.summary["trace"] = trace_summary(run.records, cell.load_point.trace.path, load)
    outcome.status, outcome.error = _status(outcome, await _settled_alive(alive, run), _max_error_rate(spec))
    return outcome


#: How long a cell whose requests failed at the connection level waits for its backend's death to show.
SETTLE_S = 3.0


async def _settled_alive(alive: Callable[[], str | None], run: LoadRun, wait_s: float = SETTLE_S) -> str | None:
    """``alive()`` at the end of a cell. When some requests failed at the connection level (refused,
    reset) and the backend still looks alive, it asks again for up to ``wait_s``: a process that has just
    exited (a crash, an OOM kill) closes its sockets before it can be reaped, and its cell must say that
    the backend died, with its exit code and log tail, not only that requests were refused."""
    dead = alive()
    if dead is not None or not any(r.error_class in ("connection", "stream_interrupted") for r in run.records):
        return dead
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while dead is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
        dead = alive()
    return dead


def stop_when_dead(should_stop: Callable[[], str | None], alive: Callable[[], str | None],
                   every_s: float = 1.0) -> Callable[[], str | None]:
    """``should_stop`` that also asks ``alive()`` (at most every ``every_s``): a dead part of the
    backend stops the load at once; the cell is then failed with ``alive()``'s reason (:func:`_status`)."""
    import time

    last = [float("-inf")]

    def check() -> str | None:
        reason = should_stop()
        if reason is None and time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            dead = alive()
            reason = None if dead is None else f"backend died during the cell ({dead})"
        return reason

    return check


def _server_frame(scrapers: list[Any]) -> Any:
    """The scrapers' samples as one frame (several: one per replica, ordered by time)."""
    if len(scrapers) == 1:
        return scrapers[0].frame()
    import pandas as pd

    return pd.concat([s.frame() for s in scrapers], ignore_index=True).sort_values("t_ns", kind="stable",
                                                                                ignore_index=True)


def stall_after_s(spec: Any) -> float | None:
    """The spec's ``limits.stall_after_s`` (``None``: no stall check)."""
    limits = getattr(spec, "limits", None)
    if limits is None or not hasattr(limits, "stall_after_s"):
        return DEFAULT_STALL_AFTER_S
    return limits.stall_after_s


def saturation_config(spec: Any) -> SaturationConfig | None:
    """The spec's ``limits.saturation`` as the detector's config (``None``: turned off)."""
    config = SaturationConfig.of(getattr(getattr(spec, "limits", None), "saturation", None))
    return config if config.enabled else None


def _gpu_sampler(nvml: Any, gpu_indices: list[int] | None, interval_s: float):
    if nvml is None or not gpu_indices:
        return None
    from benchflow.metrics.gpu import NvmlSampler

    return NvmlSampler(nvml, gpu_indices, interval_s=interval_s)


def summarize_cell(spec: Any, outcome: CellOutcome) -> dict[str, Any]:
    """The METRICS.md summary plus the active window and energy when samples allow."""
    from benchflow import stats

    summary = stats.summarize(outcome.run, slo=spec.slo or None, limits=spec.limits)
    summary["schema_version"] = SCHEMA_VERSION
    run = outcome.run
    summary["stop_reason"] = run.stop_reason
    if run.stop_reason == "stalled":
        summary["stall"] = dict(run.stop_detail)
    summary["dominant_error"] = dominant_error(run.records)
    summary["invalid"] = with_dominant_error(summary.get("invalid"), summary["dominant_error"])
    if run.stop_reason == "saturated":
        summary["saturation"] = dict(run.stop_detail)
        reason = f"saturated: {describe(run.stop_detail)}"
        summary["invalid"] = f"{summary['invalid']}; {reason}" if summary.get("invalid") else reason
    summary.update(_active_window(outcome))
    summary.update(agentic_summary(run, (summary.get("active_start_ns"), summary.get("active_end_ns"))))
    summary.update(_energy(outcome, summary))
    return summary


def _active_window(outcome: CellOutcome) -> dict[str, Any]:
    from benchflow import stats

    df = outcome.server_samples
    if df is None or df.empty or not (df["metric"] == ACTIVE_GAUGE).any():
        return {}
    return {**stats.active_window_summary(outcome.run, active_window_bounds(df)), **_by_replica(df)}


def active_window_bounds(samples: pd.DataFrame | None) -> tuple[int, int] | None:
    """``(first, last)`` server sample time with ``ACTIVE_GAUGE`` above 70%; ``None`` without one.
    With replicas (rows labelled ``replica``): the window of their mean usage (METRICS.md)."""
    return active_window_detail(samples)[0]


def active_window_detail(samples: pd.DataFrame | None
                         ) -> tuple[tuple[int, int] | None, dict[str, tuple[int, int] | None]]:
    """``(window, by_replica)``: :func:`active_window_bounds` and, when the samples are labelled
    per replica, each replica's own window (``{}`` for one engine)."""
    from benchflow.stats.window import active_window, replica_active_window

    if samples is None or samples.empty:
        return None, {}
    gauge = samples[samples["metric"] == ACTIVE_GAUGE]
    if gauge.empty:
        return None, {}
    replica = gauge["labels"].map(lambda s: json.loads(s).get("replica") if s else None)
    if replica.isna().all():
        return active_window(gauge["t_ns"].tolist(), gauge["value"].tolist()), {}
    series = {str(label): (rows["t_ns"].tolist(), rows["value"].tolist())
              for label, rows in gauge.groupby(replica.fillna("?"), sort=True)}
    return replica_active_window(series)


def _by_replica(samples: pd.DataFrame | None) -> dict[str, Any]:
    """``active_window_by_replica`` (label -> ``[start_ns, end_ns]`` or ``None``) when there are replicas."""
    by_replica = active_window_detail(samples)[1]
    if not by_replica:
        return {}
    return {"active_window_by_replica": {k: list(w) if w else None for k, w in by_replica.items()}}


def _energy(outcome: CellOutcome, summary: dict[str, Any]) -> dict[str, Any]:
    from benchflow import stats

    df = outcome.gpu_samples
    if df is None or df.empty:
        return {}
    counter = df[df["metric"] == "gpu_energy_mj"]
    if counter.empty:
        return {}
    window = stats.measurement_window(outcome.run)
    joules = sum(
        stats.energy_joules(g["t_ns"].tolist(), g["value"].tolist(), window=window) or 0.0
        for _, g in counter.groupby("labels")
    )
    # every output token served inside the window, with those of requests cut off by the stop
    tokens = (summary.get("total_output_tokens") or 0) + (summary.get("incomplete_output_tokens") or 0)
    return {"energy_j": joules, "joules_per_output_token": joules / tokens if tokens else None}


def with_dominant_error(invalid: str | None, dominant: dict[str, Any] | None) -> str | None:
    """An invalid reason that blames the error rate also names the requests' dominant error, so the
    cause (e.g. the server's ``400 ... maximum context length``) reaches the cell row and the report."""
    if not invalid or not dominant or "error rate" not in invalid:
        return invalid
    return f"{invalid} (mostly {dominant['message']!r} ×{dominant['count']})"


def _max_error_rate(spec: Any) -> float:
    from benchflow.stats.summary import DEFAULT_LIMITS

    value = getattr(getattr(spec, "limits", None), "max_error_rate", None)
    return DEFAULT_LIMITS["max_error_rate"] if value is None else float(value)


def _status(outcome: CellOutcome, backend_dead: str | None,
            max_error_rate: float = 0.05) -> tuple[str, str | None]:
    """``(status, error)`` of a measured cell: a dead backend first, then a cancel, a stall,
    a cell where no request succeeded, and a saturated one (unless its error rate is above
    ``max_error_rate``: then it is an ordinary cell, marked invalid by that error rate)."""
    run, summary = outcome.run, outcome.summary or {}
    dominant = summary.get("dominant_error")
    if backend_dead is not None:
        seen = f"; requests failed with {dominant['message']!r} ×{dominant['count']}" if dominant else ""
        return "failed", f"backend died during the cell ({backend_dead}){seen}"
    if run.stop_reason == "cancelled":
        return "cancelled", str(run.stop_detail.get("reason") or "cancelled")
    if run.stop_reason == "stalled":
        d = run.stop_detail
        since = d.get("seconds_since_last_token")
        last = f"the last token came {since:g} s ago" if since is not None else "no token came at all"
        return "stalled", (f"backend stalled: {d.get('in_flight')} requests in flight and no output token for "
                           f"{d.get('seconds_without_progress'):g} s ({last}; limits.stall_after_s = "
                           f"{d.get('stall_after_s'):g})")
    if not summary.get("completed"):
        errors = summary.get("errors") or {}
        detail = ", ".join(f"{k}×{v}" for k, v in sorted(errors.items())) or "no requests finished"
        cause = f": {dominant['message']!r} ×{dominant['count']}" if dominant else ""
        return "failed", f"no request succeeded ({detail}){cause}"
    if run.stop_reason == "saturated" and not (summary.get("error_rate") or 0.0) > max_error_rate:
        return "saturated", f"saturated: {describe(run.stop_detail)}"
    return "completed", None


def measure_cell_sync(*args: Any, **kwargs: Any) -> CellOutcome:
    """:func:`measure_cell` from synchronous code (a Prefect task thread, the CLI). A termination
    signal that lands anywhere in the cell's event loop stops the cell and is raised from here
    (:func:`benchflow.asyncrun.run_sync`)."""
    return run_sync(measure_cell(*args, **kwargs))
