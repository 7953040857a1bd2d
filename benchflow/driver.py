"""An external driver as a cell's load (``workload.driver``): an agent benchmark such as tau2-bench
that sends its own requests and prints a line per finished task and per finished step.

The driver runs as a child process in its own process group (``start_new_session``) with
``PR_SET_PDEATHSIG``, and it is always torn down: SIGTERM to the group, ``stop_grace_s``, then
SIGKILL to the group. Its stdout and stderr go to ``driver.log`` (stored as the cell's artifact),
and each line is read as it comes (:class:`DriverWatch`, pure):

- ``task_done`` / ``step_done`` lines are progress, timestamped on the request records' clock
  (``perf_counter_ns``) so that they can be set against the active window of the server samples;
- ``error`` lines are counted; ``retry_storm`` stops the driver when one of them repeats
  ``repeats`` times within ``within_s`` (the context-overflow loop that retries forever);
- no progress for ``stuck_after_s``: the driver is stopped and the cell is ``stuck``.

The summary (:func:`driver_summary`, keys in docs/metrics.md, "External driver") holds tasks and
steps done, tasks/min and steps/s over the whole run and inside the active window, the share of
the work done outside it, and the stuck or storm report.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchflow.spec.driver import DriverSpec

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: How often the watcher looks at the clock (stuck, storm, time limit, cancel).
POLL_S = 0.1
#: How often the progress is logged at INFO while the driver runs.
PROGRESS_LOG_S = 10.0
#: Cell statuses of a driver cell that did not run to its end (stored as ``failed``, the status leading the error).
DRIVER_STATUSES = ("stuck", "retry_storm")
_DIGITS = re.compile(r"\d+")


def error_key(line: str) -> str:
    """What makes two error lines "the same": the line with its numbers (times, ids, counts) blanked."""
    return _DIGITS.sub("#", line.strip())


@dataclass
class DriverWatch:
    """Reads the driver's lines and says when to stop it. Pure: times are given (``t_ns``)."""

    spec: DriverSpec
    start_ns: int
    task_ns: list[int] = field(default_factory=list)
    step_ns: list[int] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    error_lines: int = 0
    last_progress_ns: int | None = None
    lines: int = 0
    _recent: dict[str, deque] = field(default_factory=dict)
    _last_line: dict[str, str] = field(default_factory=dict)
    _verdict: tuple[str, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        s = self.spec
        self._task = re.compile(s.task_done)
        self._step = re.compile(s.step_done) if s.step_done else None
        self._error = re.compile(s.error) if s.error else None

    def feed(self, line: str, t_ns: int) -> None:
        self.lines += 1
        if self._task.search(line):
            self.task_ns.append(t_ns)
            self.last_progress_ns = t_ns
        if self._step is not None and self._step.search(line):
            self.step_ns.append(t_ns)
            self.last_progress_ns = t_ns
        if self._error is not None and self._error.search(line):
            self._on_error(line.strip(), t_ns)

    def _on_error(self, line: str, t_ns: int) -> None:
        self.error_lines += 1
        key = error_key(line)
        self.errors[key] += 1
        self._last_line[key] = line
        storm = self.spec.retry_storm
        if storm is None or self._verdict is not None:
            return
        times = self._recent.setdefault(key, deque(maxlen=storm.repeats))
        times.append(t_ns)
        if len(times) == storm.repeats and t_ns - times[0] <= storm.within_s * 1e9:
            self._verdict = ("retry_storm", {
                "line": line[:500], "repeats": storm.repeats, "within_s": storm.within_s,
                "seen_in_s": round((t_ns - times[0]) / 1e9, 3), "total": self.errors[key]})

    def verdict(self, now_ns: int) -> tuple[str, dict[str, Any]] | None:
        """``("retry_storm" | "stuck", evidence)`` once the driver should be stopped; else ``None``."""
        if self._verdict is not None:
            return self._verdict
        since = self.last_progress_ns if self.last_progress_ns is not None else self.start_ns
        idle_s = (now_ns - since) / 1e9
        if idle_s >= self.spec.stuck_after_s:
            self._verdict = ("stuck", {
                "stuck_after_s": self.spec.stuck_after_s, "seconds_without_progress": round(idle_s, 3),
                "last_progress_s": None if self.last_progress_ns is None
                else round((self.last_progress_ns - self.start_ns) / 1e9, 3)})
        return self._verdict

    def dominant_error(self) -> dict[str, Any] | None:
        if not self.errors:
            return None
        key, count = self.errors.most_common(1)[0]
        return {"line": self._last_line[key][:500], "count": count}


@dataclass
class DriverRun:
    """One run of the driver: its command, how it ended and what it printed."""

    argv: list[str]
    log_path: Path
    output_dir: str
    start_ns: int
    end_ns: int
    watch: DriverWatch
    exit_code: int | None
    #: "exited", "stuck", "retry_storm", "max_duration", "cancelled" or "start_failed"
    stop_reason: str
    stop_detail: dict[str, Any] = field(default_factory=dict)

    def progress(self) -> dict[str, list[float]]:
        """Task and step times in seconds since the driver started (``driver_progress.json``)."""
        to_s = lambda ts: [round((t - self.start_ns) / 1e9, 6) for t in ts]  # noqa: E731
        return {"task_done_s": to_s(self.watch.task_ns), "step_done_s": to_s(self.watch.step_ns)}


def _libc_prctl() -> Any:
    """libc's ``prctl``, looked up in the parent: the child must not ``dlopen`` between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(prctl: Any) -> Callable[[], None]:
    """PR_SET_PDEATHSIG (as ``benchflow.clients``): SIGKILL when the thread that started us dies."""
    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    return preexec


def run_driver(spec: DriverSpec, argv: list[str], *, log_path: Path, output_dir: str, max_duration_s: float | None,
               should_stop: Callable[[], str | None] = lambda: None, poll_s: float = POLL_S) -> DriverRun:
    """Runs the driver to its end, or until it is stuck, storms, runs out of time or is cancelled.
    Blocking (call it from a worker thread). Never leaves a process of the driver's group behind."""
    from benchflow.launch.process import _kill_group, _terminate_group

    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter_ns()
    watch = DriverWatch(spec, start)
    log.info("starting driver: %s (log: %s)", " ".join(argv), log_path)
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=spec.cwd,
            env=env, start_new_session=True, preexec_fn=_die_with_parent(_libc_prctl()))
    except OSError as e:
        log_path.write_text(f"benchflow: cannot start the driver {argv[0]!r}: {e}\n")
        return DriverRun(argv, log_path, output_dir, start, time.perf_counter_ns(), watch, None, "start_failed",
                         {"error": f"cannot start the driver {argv[0]!r}: {e}"})
    lock = threading.Lock()
    reader = threading.Thread(target=_pump, args=(proc, log_path, watch, lock), daemon=True, name="driver-log")
    reader.start()
    reason, detail = "exited", {}
    try:
        reason, detail = _watch(proc, watch, lock, start, max_duration_s, should_stop, poll_s)
    finally:
        if proc.poll() is None:
            _terminate_group(proc.pid, spec.stop_grace_s, wait=proc.wait)
        _kill_group(proc.pid, signal.SIGKILL)  # whatever the leader left in its group
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("driver (pid %s) did not exit after SIGKILL", proc.pid)
        reader.join(timeout=10)  # the pipe closes once every process of the group is gone
    end = time.perf_counter_ns()
    log.info("driver ended (%s, exit code %s): %d tasks, %d steps, %d error lines", reason, proc.returncode,
             len(watch.task_ns), len(watch.step_ns), watch.error_lines)
    return DriverRun(argv, log_path, output_dir, start, end, watch, proc.returncode, reason, detail)


def _pump(proc: subprocess.Popen, log_path: Path, watch: DriverWatch, lock: threading.Lock) -> None:
    with open(log_path, "ab") as out:
        for raw in iter(proc.stdout.readline, b""):
            t_ns = time.perf_counter_ns()
            out.write(raw)
            out.flush()
            with lock:
                watch.feed(raw.decode("utf-8", errors="replace"), t_ns)
    proc.stdout.close()


def _watch(proc: subprocess.Popen, watch: DriverWatch, lock: threading.Lock, start: int,
           max_duration_s: float | None, should_stop: Callable[[], str | None],
           poll_s: float) -> tuple[str, dict[str, Any]]:
    next_log = start + PROGRESS_LOG_S * 1e9
    while proc.poll() is None:
        now = time.perf_counter_ns()
        with lock:
            verdict = watch.verdict(now)
            tasks, steps, errors = len(watch.task_ns), len(watch.step_ns), watch.error_lines
        if verdict is not None:
            log.warning("driver %s: %s; stopping it", verdict[0], verdict[1])
            return verdict
        if max_duration_s is not None and now - start >= max_duration_s * 1e9:
            return "max_duration", {"max_duration_s": max_duration_s}
        if (why := should_stop()) is not None:
            return "cancelled", {"reason": why}
        if now >= next_log:
            log.info("driver running for %.0f s: %d tasks, %d steps done, %d error lines", (now - start) / 1e9,
                     tasks, steps, errors)
            next_log = now + PROGRESS_LOG_S * 1e9
        time.sleep(poll_s)
    return "exited", {"exit_code": proc.returncode}


def driver_artifacts(run: DriverRun) -> dict[str, bytes]:
    """``driver.log`` (what the driver printed) and ``driver_progress.json`` (task and step times)."""
    try:
        text = run.log_path.read_bytes()
    except OSError as e:
        text = f"benchflow: the driver log {run.log_path} cannot be read: {e}\n".encode()
    return {"driver.log": text, "driver_progress.json": json.dumps(run.progress()).encode()}


def _rate(count: int, span_ns: int, per_s: float) -> float | None:
    return count / (span_ns / 1e9) * per_s if span_ns > 0 else None


def _outside(times: list[int], window: tuple[int, int]) -> float | None:
    if not times:
        return None
    return sum(1 for t in times if not window[0] <= t <= window[1]) / len(times)


def driver_summary(run: DriverRun, window: tuple[int, int] | None) -> dict[str, Any]:
    """The driver's part of the cell summary (docs/metrics.md, "External driver"). ``window`` is the
    active window, ``(first, last)`` KV-cache sample above the threshold, or ``None``."""
    w, spec = run.watch, run.watch.spec
    span = run.end_ns - run.start_ns
    tasks, steps = len(w.task_ns), len(w.step_ns)
    out: dict[str, Any] = {
        "tasks_done": tasks, "steps_done": steps, "driver_error_lines": w.error_lines,
        "tasks_expected": spec.expected_tasks,
        "tasks_unfinished": max(spec.expected_tasks - tasks, 0) if spec.expected_tasks else None,
        "driver_duration_s": span / 1e9,
        "tasks_per_min": _rate(tasks, span, 60.0), "steps_per_s": _rate(steps, span, 1.0),
        "active_start_ns": None, "active_end_ns": None, "active_tasks_per_min": None, "active_steps_per_s": None,
        "tasks_outside_active_fraction": None, "steps_outside_active_fraction": None,
    }
    if window is not None:
        inside = window[1] - window[0]
        out.update({
            "active_start_ns": int(window[0]), "active_end_ns": int(window[1]),
            "active_tasks_per_min": _rate(sum(window[0] <= t <= window[1] for t in w.task_ns), inside, 60.0),
            "active_steps_per_s": _rate(sum(window[0] <= t <= window[1] for t in w.step_ns), inside, 1.0),
            "tasks_outside_active_fraction": _outside(w.task_ns, window),
            "steps_outside_active_fraction": _outside(w.step_ns, window),
        })
    out["driver"] = {"argv": run.argv, "exit_code": run.exit_code, "stop_reason": run.stop_reason,
                     "output_dir": run.output_dir, "dominant_error": w.dominant_error(),
                     "lines": w.lines}
    if run.stop_reason in DRIVER_STATUSES:
        out[run.stop_reason] = {**run.stop_detail, "tasks_done": tasks, "tasks_unfinished": out["tasks_unfinished"]}
    out["stop_reason"] = run.stop_reason
    out["invalid"] = driver_invalid(run, out)
    return out


def driver_invalid(run: DriverRun, summary: Mapping[str, Any]) -> str | None:
    """Why the driver's cell does not count ("; "-joined), or ``None``. A driver stopped at
    ``max_duration_s`` counts as long as every expected task finished."""
    reasons = []
    if run.stop_reason in (*DRIVER_STATUSES, "cancelled", "start_failed"):
        reasons.append(driver_status(run, summary)[1] or run.stop_reason)
    elif run.exit_code and run.stop_reason == "exited":
        reasons.append(f"the driver exited with code {run.exit_code}")
    if summary["tasks_unfinished"] and run.stop_reason not in DRIVER_STATUSES:
        reasons.append(f"{summary['tasks_unfinished']} of {summary['tasks_expected']} expected tasks never finished")
    if not summary["tasks_done"]:
        reasons.append("the driver finished no task")
    return "; ".join(reasons) or None


def driver_status(run: DriverRun, summary: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(status, error)`` of a driver cell. ``stuck`` and ``retry_storm`` are statuses of their own
    (the store keeps them as ``failed`` with the status leading the error: never green)."""
    d, unfinished = run.stop_detail, summary.get("tasks_unfinished")
    left = f"; {unfinished} of {summary.get('tasks_expected')} expected tasks never finished" if unfinished else ""
    if run.stop_reason == "stuck":
        return "stuck", (f"stuck: the driver printed no task or step line for {d['seconds_without_progress']:g} s "
                         f"(driver.stuck_after_s = {d['stuck_after_s']:g}); {summary.get('tasks_done')} tasks "
                         f"done{left}")
    if run.stop_reason == "retry_storm":
        return "retry_storm", (f"retry_storm: the driver printed {d['line']!r} {d['repeats']} times within "
                               f"{d['seen_in_s']:g} s (driver.retry_storm: {d['repeats']} within {d['within_s']:g} s)"
                               f"{left}")
    if run.stop_reason == "cancelled":
        return "cancelled", str(d.get("reason") or "cancelled")
    if run.stop_reason == "start_failed":
        return "failed", d.get("error")
    return "completed", None


# ---- one cell ------------------------------------------------------------------------------------

async def measure_driver_cell(spec: Any, cell: Any, base_url: str, outcome: Any, *,
                              alive: Callable[[], str | None], should_stop: Callable[[], str | None], gpu: Any,
                              window_of: Callable[[Any], tuple[int, int] | None], scrape_interval_s: float,
                              replica_urls: Mapping[str, str] | None = None) -> Any:
    """Runs the spec's driver for ``cell`` while the server (and ``gpu``, a sampler or ``None``) are
    sampled, and fills in ``outcome`` (a ``runner.CellOutcome``): samples, the summary of
    :func:`driver_summary` (``window_of(server samples)`` is the active window), status and the
    artifacts ``driver.log`` and ``driver_progress.json``. A cancelled coroutine stops the driver
    before it returns. ``replica_urls`` (label -> URL, replicas behind a router): their ``/metrics``
    are sampled instead of ``base_url``'s, each row labelled ``replica``."""
    import asyncio
    import contextlib
    import shutil
    import tempfile
    from datetime import UTC, datetime

    from benchflow import SCHEMA_VERSION
    from benchflow.metrics.prometheus import PrometheusScraper

    wl, d = spec.workload, spec.workload.driver
    output_dir = Path(tempfile.mkdtemp(prefix=f"benchflow-driver-{cell.id[:16]}-"))
    log_path = output_dir / "driver.log"
    argv = d.argv(url=base_url, model=spec.model.name, concurrency=cell.load_point.concurrency,
                  output_dir=str(output_dir))
    cancelled = threading.Event()

    def stop() -> str | None:
        return "the cell was cancelled" if cancelled.is_set() else should_stop()

    scrapers = [PrometheusScraper.for_endpoint(url, interval_s=scrape_interval_s, extra_labels={"replica": label})
                for label, url in (replica_urls or {}).items()] or [
                PrometheusScraper.for_endpoint(base_url, interval_s=scrape_interval_s)]
    async with contextlib.AsyncExitStack() as stack:
        for scraper in scrapers:
            await stack.enter_async_context(scraper.running())
        if gpu:
            await stack.enter_async_context(gpu.running())
        job = asyncio.ensure_future(asyncio.to_thread(
            run_driver, d, argv, log_path=log_path, output_dir=str(output_dir), max_duration_s=wl.max_duration_s,
            should_stop=stop))
        try:
            run = await asyncio.shield(job)
        except asyncio.CancelledError:
            cancelled.set()  # the thread tears the driver down; wait for it, then go on cancelling
            await asyncio.wait({job}, timeout=d.stop_grace_s + 30.0)
            raise
    outcome.finished_at = datetime.now(UTC)
    frames = [scraper.frame() for scraper in scrapers]
    if len(frames) > 1:
        import pandas as pd

        frames = [pd.concat(frames, ignore_index=True).sort_values("t_ns", kind="stable", ignore_index=True)]
    outcome.server_samples, outcome.gpu_samples = frames[0], gpu.frame() if gpu else None
    outcome.extra["artifacts"] = driver_artifacts(run)
    log_path.unlink(missing_ok=True)  # stored as the cell's artifact; the driver's own output stays
    if not any(output_dir.iterdir()):
        shutil.rmtree(output_dir, ignore_errors=True)
    summary = driver_summary(run, window_of(outcome.server_samples))
    summary.update(schema_version=SCHEMA_VERSION, mode="closed", concurrency=cell.load_point.concurrency,
                   duration_s=summary["driver_duration_s"])
    summary["driver"]["output_dir"] = str(output_dir) if output_dir.exists() else None  # None: it wrote nothing
    outcome.summary = summary
    dead = alive()
    if dead is not None:
        outcome.status, outcome.error = "failed", f"backend died during the cell ({dead})"
    else:
        outcome.status, outcome.error = driver_status(run, summary)
    return outcome
