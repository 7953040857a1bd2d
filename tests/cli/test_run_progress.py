"""``benchflow run`` in a pseudo-terminal: a live progress line that advances, no task-run noise."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchflow.progress import ProgressEvent, TerminalProgress, emit

BENCHFLOW = str(Path(sys.executable).parent / "benchflow")
REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENCHFLOW_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), BENCHFLOW_HOME=str(tmp_path / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "storage"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), BENCHFLOW_GPU_SLOTS="off",
               COLUMNS="160", TERM="xterm")
    return env


def _spec(tmp_path: Path) -> Path:
    spec = {"name": "pty-demo", "allow_simulated": True, "model": {"name": "sim-model"},
            "backends": [{"name": "sim-a", "kind": "sim", "ready_timeout_s": 60, "stop_grace_s": 2,
                          "engine_args": {"time-scale": 0.1}}],
            "workload": {"dataset": "D(16,4)", "seed": 1, "load_points": [{"concurrency": 1}, {"concurrency": 2}],
                         "max_requests": 3, "warmup_requests": 0, "request_timeout_s": "20s",
                         "max_duration_s": "30s"},
            "repetitions": 2}
    path = tmp_path / "pty-demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run_in_pty(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError("benchflow run did not finish in time:\n" + b"".join(chunks).decode(errors="replace"))
        return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration
def test_run_in_a_pty_shows_an_advancing_progress_line_and_no_task_run_noise(tmp_path):
    code, out = _run_in_pty([BENCHFLOW, "run", str(_spec(tmp_path))], _env(tmp_path), timeout_s=420)
    text = ANSI.sub("", out)
    assert code == 0, text[-4000:]
    assert "1/4" in text and "4/4" in text, text[-4000:]
    assert text.index("1/4") < text.rindex("4/4")
    assert "sim-a c1 rep" in text or "sim-a c2 rep" in text, text[-4000:]  # the current cell is named
    # the flow's own final line at most: no task run's (deploy, run-cell, persist, ... gave dozens)
    assert text.count("Finished in state Completed()") <= 1, text[-4000:]
    assert not re.search(r"(prefect\.task_runs|Task run).*Finished in state", text), text[-4000:]
    assert len(re.findall(r"cell sim-a c\d rep \d: 3 ok", text)) == 4, text[-4000:]  # a cell's own line stays


def test_plain_lines_when_not_a_tty():
    buf = io.StringIO()
    now = [100.0]
    view = TerminalProgress(stream=buf, clock=lambda: now[0])
    assert view.rich is False
    with view:
        emit(ProgressEvent("start", "c", 0, 4))
        emit(ProgressEvent("cell", "c", 0, 4, "a c1 rep 0"))
        now[0] += 30
        emit(ProgressEvent("advance", "c", 1, 4, "a c1 rep 0: completed"))
    emit(ProgressEvent("advance", "c", 2, 4, "after close"))  # no longer listening
    lines = buf.getvalue().splitlines()
    assert lines == ["progress: 0/4 cells | elapsed 0:00 | eta ?",
                     "progress: 1/4 cells | a c1 rep 0: completed | elapsed 0:30 | eta 1:30"]


def test_a_failing_listener_never_fails_the_emitter():
    def boom(event):
        raise RuntimeError("terminal gone")

    from benchflow.progress import add_listener, remove_listener
    add_listener(boom)
    try:
        emit(ProgressEvent("start", "c", 0, 1))
    finally:
        remove_listener(boom)
