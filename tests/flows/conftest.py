"""Flow tests run the real campaign flow under one throwaway Prefect server per session (the
session-wide ``prefect_harness`` of tests/conftest.py: one harness, never two side by side)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.support.sim_process import SimServer


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh embedded default (SQLite + local artifacts) for one test."""
    path = tmp_path / "home"
    monkeypatch.setenv("BENCHFLOW_HOME", str(path))
    for var in ("BENCHFLOW_DATABASE_URL", "BENCHFLOW_ARTIFACTS", "BENCHFLOW_SPOOL_DIR"):
        monkeypatch.delenv(var, raising=False)
    return path


def write_spec(tmp_path: Path, backends: list[dict], *, load_points=None, repetitions=3, max_requests=8,
               name="flowtest", **extra) -> Path:
    spec = {
        "name": name, "allow_simulated": True, "model": {"name": "sim-model"},
        "backends": backends,
        "workload": {"dataset": "D(32,8)", "seed": 1, "load_points": load_points or [{"concurrency": 4}],
                     "max_requests": max_requests, "warmup_requests": 1, "request_timeout_s": "20s",
                     "max_duration_s": "60s"},
        "repetitions": repetitions, **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sim_backend(name: str, **engine_args) -> dict:
    return {"name": name, "kind": "sim", "ready_timeout_s": 30,
            "engine_args": {"time-scale": 0.25, **engine_args}}


@pytest.fixture
def sim_server():
    servers: list[SimServer] = []

    def start(*args: str) -> SimServer:
        servers.append(SimServer(*args))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def processes_running(fragment: str) -> list[int]:
    """Pids whose command line contains ``fragment`` (zombies excluded)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(") ")[1][0]
        except OSError:
            continue
        if fragment in cmd and state != "Z":
            pids.append(int(proc.name))
    return pids
