"""Orchestration overhead (`make bench`): what the campaign flow costs beyond the measurements.

Runs the 12-cell campaign bench/campaign12.yaml (2 simulated backends x 2 load points x 3
repetitions, 16 requests a cell) as a user does: `benchflow run SPEC` in a subprocess, on the
embedded default (a temporary BENCHFLOW_HOME with SQLite and a local folder, a temporary
PREFECT_HOME, no PREFECT_API_URL, so the command starts and stops its own ephemeral Prefect
server). Then it reads

* the cell windows (``cells.window_s`` = the summary's ``duration_s``) from the results database;
* the flow run's own duration and every task run's start and end from Prefect's API (a second,
  short-lived ephemeral server on the same PREFECT_HOME); backend start-up is the duration of
  the ``deploy-backend`` task (process start -> /health and /v1/models answer);

and reports

    overhead = duration - sum(cell windows) - sum(backend start-ups)

once for the flow run (Prefect state timestamps; the ephemeral server's start-up is NOT
included) and once for the whole command (wall time; imports, the ephemeral server's start-up
and shut-down and the printed report ARE included), in total and per cell, with a breakdown by
task. It also records the peak RSS (VmHWM) of the `benchflow run` process, of each simulator
process and of the ephemeral Prefect server, by polling /proc (Linux only).

Writes bench/results/orchestration.json and prints a markdown table.

    .venv/bin/python bench/orchestration_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from proc_memory import POLL_S, TreeMonitor  # noqa: E402

SPEC = ROOT / "bench" / "campaign12.yaml"
RESULTS = ROOT / "bench" / "results" / "orchestration.json"
CAMPAIGN_TIMEOUT_S = 240.0
QUERY_TIMEOUT_S = 120.0
#: Variables that would send the run somewhere other than the embedded default.
_UNSET = ("PREFECT_API_URL", "PREFECT_API_KEY", "BENCHFLOW_DATABASE_URL", "BENCHFLOW_ARTIFACTS",
          "BENCHFLOW_SPOOL_DIR", "BENCHFLOW_S3_ENDPOINT_URL", "PREFECT_PROFILES_PATH")


def _role(pid: int, root: int, cmd: str) -> str:
    if pid == root:
        return "benchflow run"
    if "benchflow.sim" in cmd:
        return "simulator"
    if "prefect" in cmd or "uvicorn" in cmd:
        return "prefect server (ephemeral)"
    return "other"


# -- the campaign, as a user runs it ----------------------------------------------------------

def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(BENCHFLOW_HOME=str(tmp / "benchflow"), PREFECT_HOME=str(tmp / "prefect"), PYTHONUNBUFFERED="1")
    return env


def _wait(proc: subprocess.Popen, timeout_s: float) -> tuple[int, resource.struct_rusage]:
    """os.wait4 on the child (for its own rusage), killing its process group after ``timeout_s``."""
    timer = threading.Timer(timeout_s, lambda: _kill_group(proc.pid))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_campaign(spec: Path, tmp: Path, timeout_s: float = CAMPAIGN_TIMEOUT_S) -> dict:
    """Runs ``benchflow run SPEC`` in a subprocess; returns wall time, exit code and peak memory."""
    argv = [sys.executable, "-m", "benchflow", "run", str(spec)]
    log_path = tmp / "benchflow-run.log"
    with open(log_path, "wb") as log:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen(argv, cwd=ROOT, env=_env(tmp), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        monitor = TreeMonitor(proc.pid, POLL_S, role=_role)
        monitor.start()
        try:
            rc, usage = _wait(proc, timeout_s)
        finally:
            monitor.stop()
            _kill_group(proc.pid)  # nothing of ours may outlive the command
        wall_s = (time.perf_counter_ns() - t0) / 1e9
        ended_at = datetime.now(UTC)
    return {"argv": ["benchflow", "run", str(spec.relative_to(ROOT))], "exit_code": rc, "wall_s": wall_s,
            "started_at": started_at, "ended_at": ended_at, "log_path": str(log_path),
            "memory": monitor.by_role(), "rusage_maxrss_mib": round(usage.ru_maxrss / 1024, 1)}


def read_cells(home: Path) -> dict:
    """The campaign row and its cells from the results database the command wrote."""
    from benchflow.store.results import Results

    results = Results.from_env({"BENCHFLOW_HOME": str(home)})
    try:
        campaigns = results.store.campaigns()
        if len(campaigns) != 1:
            raise RuntimeError(f"expected one campaign in {home}, found {len(campaigns)}")
        campaign = campaigns[0]
        cells = results.store.cells(campaign["id"])
    finally:
        results.store.dispose()
    return {"campaign": campaign, "cells": cells}


# -- Prefect's view: flow and task run timestamps --------------------------------------------

def read_prefect(tmp: Path, flow_run_id: str, timeout_s: float = QUERY_TIMEOUT_S) -> dict:
    """The flow run and its task runs, read through Prefect's API in a child process (it starts
    an ephemeral server on the campaign's PREFECT_HOME)."""
    out = tmp / "prefect-runs.json"
    argv = [sys.executable, __file__, "--read-prefect", flow_run_id, "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    finally:
        _kill_group(proc.pid)  # its ephemeral server too, should it outlive the query
        proc.wait()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"reading Prefect runs failed ({proc.returncode}):\n{output[-2000:]}")
    return json.loads(out.read_text())


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def _query_prefect(flow_run_id: str, out: Path) -> None:
    """Child mode: writes the flow run and its task runs (name, state, start, end) to ``out``."""
    import asyncio
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def go() -> dict:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(flow_run_id))
            runs_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            tasks: list = []
            while True:  # the API returns at most 200 at a time
                page = await client.read_task_runs(flow_run_filter=runs_filter, limit=200, offset=len(tasks))
                tasks += page
                if len(page) < 200:
                    break
        return {"flow_run": {"name": run.name, "state": run.state_type.value if run.state_type else None,
                             "start_time": _iso(run.start_time), "end_time": _iso(run.end_time)},
                "task_runs": [{"name": t.name, "state": t.state_type.value if t.state_type else None,
                               "start_time": _iso(t.start_time), "end_time": _iso(t.end_time)} for t in tasks]}

    out.write_text(json.dumps(asyncio.run(go()), indent=1))


# -- the figures ------------------------------------------------------------------------------

_LOG_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+)"


def server_log_times(log_text: str) -> dict[str, datetime | None]:
    """When the command logged "Starting/Stopping temporary server" (Prefect's console format,
    local time), as UTC datetimes; None when the line is missing or formatted otherwise."""
    out: dict[str, datetime | None] = {}
    for key, words in (("server_start_logged_at", "Starting temporary server"),
                       ("server_stop_logged_at", "Stopping temporary server")):
        match = re.search(_LOG_STAMP + r".*" + words, log_text)
        stamp = datetime.strptime(match.group(1).replace(",", "."), "%Y-%m-%d %H:%M:%S.%f") if match else None
        out[key] = stamp.astimezone(UTC) if stamp else None  # naive = local time
    return out


def _span_s(start: str | datetime | None, end: str | datetime | None) -> float | None:
    if not start or not end:
        return None
    start = datetime.fromisoformat(start) if isinstance(start, str) else start
    end = datetime.fromisoformat(end) if isinstance(end, str) else end
    return (end - start).total_seconds()


#: Task-run name prefixes (task runs carry their backend, load point and repetition) -> task group.
_GROUPS = (("run-cell", "run-cell"), ("persist-cell", "persist-cell"), ("persist-backend-log", "persist-backend-log"),
           ("deploy-", "deploy-backend"), ("teardown-", "teardown-backend"))


def task_group(name: str) -> str:
    """``run-cell-mns8-c4-rep0`` -> ``run-cell``; ``deploy-mns8`` -> ``deploy-backend``;
    ``persist-cell-8dc`` -> ``persist-cell``; ``aggregate-1f2`` -> ``aggregate``."""
    for prefix, group in _GROUPS:
        if name.startswith(prefix):
            return group
    return re.sub(r"-[0-9a-f]{3}$", "", name)


def task_breakdown(task_runs: list[dict]) -> dict[str, dict]:
    groups: dict[str, dict] = {}
    for t in task_runs:
        span = _span_s(t["start_time"], t["end_time"])
        g = groups.setdefault(task_group(t["name"]), {"count": 0, "total_s": 0.0})
        g["count"] += 1
        g["total_s"] += span or 0.0
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]["total_s"]))


def _command_phases(command: dict, flow: dict) -> dict:
    """Splits the time outside the flow run at the server's start and stop log lines."""
    start, stop = command.get("server_start_logged_at"), command.get("server_stop_logged_at")
    return {"start_to_server_start_s": _span_s(command["started_at"], start),
            "server_start_to_flow_run_s": _span_s(start, flow["start_time"]),
            "flow_run_to_server_stop_s": _span_s(flow["end_time"], stop),
            "server_stop_to_exit_s": _span_s(stop, command["ended_at"])}


def analyse(command: dict, db: dict, prefect: dict) -> dict:
    """Overhead = duration - sum(cell windows) - sum(backend start-ups), for the flow and the command."""
    cells = db["cells"]
    n = len(cells)
    windows_s = sum(c["window_s"] or 0.0 for c in cells)
    tasks = prefect["task_runs"]
    startups = [_span_s(t["start_time"], t["end_time"]) or 0.0 for t in tasks if task_group(t["name"]) == "deploy-backend"]
    startup_s = sum(startups)
    flow = prefect["flow_run"]
    flow_s = _span_s(flow["start_time"], flow["end_time"])
    groups = task_breakdown(tasks)
    in_tasks_s = sum(g["total_s"] for g in groups.values())

    def overhead(total: float | None) -> dict:
        if total is None:
            return {"total_s": None, "overhead_s": None, "overhead_per_cell_s": None}
        over = total - windows_s - startup_s
        return {"total_s": total, "overhead_s": over, "overhead_per_cell_s": over / n if n else None}

    return {
        "cells": n, "cells_completed": sum(c["status"] == "completed" for c in cells),
        "sum_cell_windows_s": windows_s, "backend_startups_s": startups, "sum_backend_startups_s": startup_s,
        "flow_run": {**overhead(flow_s), "ephemeral_server_startup_included": False,
                     "state": flow["state"], "outside_tasks_s": (flow_s or 0.0) - in_tasks_s},
        "command": {**overhead(command["wall_s"]), "ephemeral_server_startup_included": True,
                    "exit_code": command["exit_code"],
                    "before_flow_run_s": _span_s(command["started_at"], flow["start_time"]),
                    "after_flow_run_s": _span_s(flow["end_time"], command["ended_at"]),
                    **_command_phases(command, flow)},
        "run_cell_beyond_window_s": groups.get("run-cell", {}).get("total_s", 0.0) - windows_s,
        "tasks": groups,
    }


def _fmt(v: float | None, unit: str = "s", digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f} {unit}"


def report(result: dict) -> str:
    from benchflow.tables import render_table

    a, mem = result["figures"], result["memory"]
    rows = [
        ("cells (completed)", f"{a['cells']} ({a['cells_completed']})"),
        ("`benchflow run` wall time (ephemeral Prefect server start/stop included)", _fmt(a["command"]["total_s"])),
        ("flow run duration (Prefect state timestamps; server start-up not included)", _fmt(a["flow_run"]["total_s"])),
        ("sum of cell windows", _fmt(a["sum_cell_windows_s"])),
        ("sum of backend start-ups (deploy-backend: start -> ready)",
         f"{_fmt(a['sum_backend_startups_s'])} ({', '.join(f'{s:.2f}' for s in a['backend_startups_s'])})"),
        ("overhead, flow run: total / per cell",
         f"{_fmt(a['flow_run']['overhead_s'])} / {_fmt(a['flow_run']['overhead_per_cell_s'], digits=3)}"),
        ("overhead, whole command: total / per cell",
         f"{_fmt(a['command']['overhead_s'])} / {_fmt(a['command']['overhead_per_cell_s'], digits=3)}"),
        ("  of which before the flow run starts", _fmt(a["command"]["before_flow_run_s"])),
        ("    interpreter start and imports (until the server start is logged)",
         _fmt(a["command"]["start_to_server_start_s"])),
        ("    ephemeral Prefect server start-up and flow run creation", _fmt(a["command"]["server_start_to_flow_run_s"])),
        ("  of which after the flow run ends", _fmt(a["command"]["after_flow_run_s"])),
        ("    report printed (until the server stop is logged)", _fmt(a["command"]["flow_run_to_server_stop_s"])),
        ("    ephemeral server shut-down and exit", _fmt(a["command"]["server_stop_to_exit_s"])),
        ("  of which inside run-cell tasks but outside the windows", _fmt(a["run_cell_beyond_window_s"])),
    ]
    for role, m in sorted(mem.items()):
        rows.append((f"peak RSS, {role} ({m['processes']} process{'es' if m['processes'] > 1 else ''})",
                     f"{m['peak_rss_mib_max']:.0f} MiB" + (f" (each: {', '.join(f'{x:.0f}' for x in m['peak_rss_mib'])})"
                                                           if m["processes"] > 1 else "")))
    table = render_table(rows, ["orchestration (12-cell campaign)", "value"], markdown=True)
    tasks = render_table([(name, g["count"], f"{g['total_s']:.3f}") for name, g in a["tasks"].items()]
                         + [("(flow code outside any task)", "", f"{a['flow_run']['outside_tasks_s']:.3f}")],
                         ["task", "runs", "total (s)"], markdown=True)
    return table + "\n\n" + tasks


def measure(spec: Path = SPEC, keep: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="benchflow-bench-"))
    try:
        command = run_campaign(spec, tmp)
        log_text = Path(command["log_path"]).read_text(errors="replace")
        if command["exit_code"] != 0:
            raise RuntimeError(f"benchflow run exited {command['exit_code']}; log tail:\n{log_text[-3000:]}")
        command.update(server_log_times(log_text))
        db = read_cells(tmp / "benchflow")
        prefect = read_prefect(tmp, db["campaign"]["flow_run_id"])
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    from benchflow import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION, "benchmark": "orchestration_overhead",
        "measured_at": command["started_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "command": " ".join(command["argv"]), "spec": str(spec.relative_to(ROOT)),
        "environment": "temporary BENCHFLOW_HOME (SQLite + local folder) and PREFECT_HOME; no PREFECT_API_URL",
        "campaign_id": db["campaign"]["id"], "figures": analyse(command, db, prefect), "memory": command["memory"],
        "rusage_maxrss_mib": command["rusage_maxrss_mib"], "kept": str(tmp) if keep else None,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC, help="campaign spec (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes (database, logs)")
    parser.add_argument("--read-prefect", metavar="FLOW_RUN_ID", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.read_prefect:
        _query_prefect(args.read_prefect, args.out)
        return {}
    result = measure(args.spec.resolve(), keep=args.keep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report(result))
    print(f"\nwritten to {args.out}")
    return result


if __name__ == "__main__":
    main()
