"""``benchflow run`` as a user runs it: a subprocess with its own throwaway Prefect server.

- a server that cannot start in time gives one clear line, not Prefect's RuntimeError;
- every cell invalid gives the distinct exit code 3;
- ``kill -9`` of the run takes the throwaway server with it, and the resume marks the killed
  flow run Crashed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchflow.cli.run import EXIT_NOTHING_VALID

pytestmark = pytest.mark.integration

BENCHFLOW = str(Path(sys.executable).parent / "benchflow")
REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENCHFLOW_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), BENCHFLOW_HOME=str(tmp_path / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "storage"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), BENCHFLOW_GPU_SLOTS="off")
    env.update(extra)
    return env


def _spec(tmp_path: Path, name: str, *, engine_args: dict | None = None, dataset: str = "D(32,8)",
          max_requests: int = 4, max_duration_s: str = "60s", concurrency: int = 2) -> Path:
    spec = {"name": name, "allow_simulated": True, "model": {"name": "sim-model"},
            "backends": [{"name": "sim-a", "kind": "sim", "ready_timeout_s": 60, "stop_grace_s": 2,
                          "engine_args": {"time-scale": 0.25, **(engine_args or {})}}],
            "workload": {"dataset": dataset, "seed": 1, "load_points": [{"concurrency": concurrency}],
                         "max_requests": max_requests, "warmup_requests": 1, "request_timeout_s": "20s",
                         "max_duration_s": max_duration_s},
            "repetitions": 1}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _poll(fn, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not reached within {timeout_s}s")


def test_a_server_that_does_not_start_in_time_gives_one_clear_line(tmp_path):
    spec = _spec(tmp_path, "slow-server")
    proc = subprocess.run([BENCHFLOW, "run", str(spec)], env=_env(
        tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1"), capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "RuntimeError" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "temporary Prefect server did not start within 1s" in lines[0]
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in lines[0] and "PREFECT_API_URL" in lines[0]


def test_the_default_startup_timeout_is_generous_and_the_users_value_wins():
    from tasks.local_server import DEFAULT_STARTUP_TIMEOUT_S, startup_timeout_s

    assert DEFAULT_STARTUP_TIMEOUT_S >= 120
    assert startup_timeout_s({}) == DEFAULT_STARTUP_TIMEOUT_S
    assert startup_timeout_s({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}) == 300


def test_every_cell_invalid_exits_with_the_nothing_valid_code(tmp_path):
    # every prompt (32 tokens + 8 out) is over the simulator's max-model-len: every request fails
    spec = _spec(tmp_path, "all-invalid", engine_args={"max-model-len": 16})
    proc = subprocess.run([BENCHFLOW, "run", str(spec)], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == EXIT_NOTHING_VALID, proc.stdout + proc.stderr[-4000:]
    assert "measured, but nothing valid" in proc.stderr
    helptext = subprocess.run([BENCHFLOW, "run", "--help"], env=_env(tmp_path), capture_output=True, text=True,
                              timeout=60).stdout
    assert "3  measured, but nothing valid" in helptext


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((int(entry.name), cmd))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _flow_run_states(prefect_db: Path) -> dict[str, str]:
    with sqlite3.connect(prefect_db) as conn:
        rows = conn.execute("select id, state_type from flow_run").fetchall()
    return {str(i).replace("-", ""): str(s) for i, s in rows}


def _campaign_flow_run(home: Path, cid: str) -> str | None:
    db = home / "benchflow.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute("select flow_run_id from campaigns where id = ?", (cid,)).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row and row[0] else None


def test_kill_9_takes_the_server_along_and_the_resume_marks_the_old_run_crashed(tmp_path):
    cid = "kill9-resume-1"
    # one cell of ~6 s (duration-bounded), long enough to be killed in
    spec = _spec(tmp_path, "kill9", dataset="D(32,64)", max_requests=10_000, max_duration_s="6s",
                 engine_args={"time-scale": 1.0}, concurrency=1)
    env = _env(tmp_path)
    first = subprocess.Popen([BENCHFLOW, "run", str(spec), "--campaign-id", cid], env=env,
                             stdout=subprocess.DEVNULL, stderr=(tmp_path / "first.log").open("wb"),
                             start_new_session=True)
    try:
        old_run = _poll(lambda: _campaign_flow_run(tmp_path / "home", cid), 180, "campaign row with its flow run")
        servers = [pid for pid, cmd in _children(first.pid) if "uvicorn" in cmd]
        assert servers, f"no throwaway server under pid {first.pid}: {_children(first.pid)}"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        _poll(lambda: not any(_alive(p) for p in servers), 30, "the throwaway server gone after kill -9")
        prefect_db = tmp_path / "prefect-home" / "prefect.db"
        assert _flow_run_states(prefect_db)[old_run.replace("-", "")] == "RUNNING"
        resume = subprocess.run([BENCHFLOW, "run", str(spec), "--campaign-id", cid], env=env, capture_output=True,
                                text=True, timeout=400)
        assert resume.returncode == 0, resume.stdout + resume.stderr[-4000:]
        states = _flow_run_states(prefect_db)
        assert states[old_run.replace("-", "")] == "CRASHED", states
        new_run = _campaign_flow_run(tmp_path / "home", cid)
        assert new_run != old_run and states[new_run.replace("-", "")] == "COMPLETED", states
        # the README's sqlite3 example, on the database a real campaign wrote
        from tests.runner.test_report_cli import README_QUERY

        with sqlite3.connect(tmp_path / "home" / "benchflow.db") as conn:
            rows = conn.execute(README_QUERY).fetchall()
        assert len(rows) == 1 and rows[0][0] == "sim-a" and rows[0][4] > 0, rows
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        from benchflow.launch import reap_leftovers

        reap_leftovers(tmp_path / "home" / "runs" / cid / "processes", grace_s=2)  # the killed run's simulator
