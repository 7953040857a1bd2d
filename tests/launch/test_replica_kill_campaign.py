"""Killing one replica mid-cell, at campaign level: ``benchflow run`` serves a campaign from two
simulator replicas behind a real vllm-router; once replica 1 (found through the process registry
the launcher writes, ``<home>/runs/<campaign>/processes/<pid>.json``) has served requests of the
cell, the test SIGKILLs it. The cell is recorded as this backend's failure with the cause naming
the replica, its port and the signal; the campaign ends (not left ``running``); no replica or
router outlives it. A normal cell first: the load splits across the replicas, by each replica's
own ``/metrics`` counters as stored (labelled ``replica``)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.campaign.test_sweep_campaign import BENCHFLOW, _env
from tests.launch.harness import ROUTER_COMMAND, wait_for

pytestmark = pytest.mark.integration

SIM = [sys.executable, "-m", "benchflow", "sim", "--host", "{host}", "--port", "{port}", "--model", "{model}",
       "--served-model-name", "{model}", "{engine_args}"]


def _spec(tmp_path: Path, name: str, time_scale: float, **workload) -> Path:
    mark = {"KILL_MARK": str(tmp_path)}
    spec = {
        "name": name, "allow_simulated": True, "model": {"name": "sim-model"},
        "backends": [{"name": "pair", "kind": "sim", "launcher": "process", "command": SIM, "replicas": 2,
                      "engine_args": {"time-scale": time_scale}, "env": mark,
                      "router": {"command": ROUTER_COMMAND, "env": mark}}],
        "workload": {"dataset": "D(64,64)", "seed": 1, "load_points": [{"concurrency": 4}], **workload},
        "repetitions": 1,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _no_leftovers(tmp_path: Path) -> None:
    def mark(pid: int) -> str:
        try:
            return psutil.Process(pid).environ().get("KILL_MARK", "")
        except psutil.Error:
            return ""

    leftover = [p.pid for p in psutil.process_iter() if mark(p.pid) == str(tmp_path)]
    assert leftover == [], "a replica or the router outlived the campaign"


def test_a_normal_cell_splits_its_load_across_both_replicas(tmp_path):
    path = _spec(tmp_path, "split", 0.05, max_requests=40)
    run = subprocess.run([BENCHFLOW, "run", str(path), "--campaign-id", "split-1"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    metrics = sorted((tmp_path / "home").rglob("server_metrics.parquet"))
    assert len(metrics) == 1, metrics
    df = pd.read_parquet(metrics[0])
    ok = df[df["metric"] == "vllm:request_success_total"]
    served = {json.loads(labels)["replica"]: group.sort_values("t_ns")["value"].iloc[-1]
              for labels, group in ok.groupby("labels")}
    assert set(served) == {"r0", "r1"} and sum(served.values()) >= 40, served
    # round robin: each replica served a fair share (at least a quarter of the cell's requests)
    assert min(served.values()) >= 10, served
    _no_leftovers(tmp_path)


def _replica_1(registry: Path) -> dict | None:
    for path in registry.glob("*.json") if registry.exists() else []:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if info.get("backend") == "pair-r1":
            return info
    return None


def _served(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


def test_killing_one_replica_mid_cell_fails_the_backend_with_the_cause_and_ends_the_campaign(tmp_path):
    # a cell long enough to be caught running: up to 2000 requests or 5 minutes at full time scale
    path = _spec(tmp_path, "kill", 1.0, max_requests=2000, max_duration_s="5m")
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([BENCHFLOW, "run", str(path), "--campaign-id", "kill-1"], env=_env(tmp_path),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        info = wait_for(lambda: _replica_1(tmp_path / "home" / "runs" / "kill-1" / "processes"), 300,
                        "replica 1 to be registered")
        port = int(info["argv"][info["argv"].index("--port") + 1])
        wait_for(lambda: _served(port) >= 3 or proc.poll() is not None, 300, "replica 1 to serve the cell")
        assert proc.poll() is None, "the campaign ended before replica 1 served the cell"
        os.kill(info["pid"], signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    out = (tmp_path / "run.log").read_text(errors="replace")
    db = sqlite3.connect(tmp_path / "home" / "benchflow.db")
    status = db.execute("select status from campaigns where id = 'kill-1'").fetchone()
    assert status is not None and status[0] != "running", (status, out[-4000:])
    cells = db.execute("select backend_name, status, error from cells where campaign_id = 'kill-1'").fetchall()
    assert len(cells) == 1, cells
    backend, cell_status, error = cells[0]
    assert backend == "pair" and cell_status == "failed", cells
    assert f"replica 1 (pair-r1, http://127.0.0.1:{port})" in error, error
    assert "killed by signal 9, SIGKILL" in error, error
    assert "replica 1 (pair-r1" in out  # the failure is visible in the run's output too
    print(f"campaign {status[0]}, exit code {proc.returncode}; cell: {error}")
    _no_leftovers(tmp_path)
    assert list((tmp_path / "home" / "runs" / "kill-1" / "processes").glob("*.json")) == []
