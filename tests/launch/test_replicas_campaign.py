"""``benchflow run`` on a campaign whose backend is two simulator replicas behind vllm-router: the
cells complete, the stored server metrics are per replica (both served requests), the stored
backend log holds the router's lines and the replicas', and the run leaves no process behind (every
part carries a marker in its environment)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import psutil
import pytest
import yaml

from tests.campaign.test_sweep_campaign import BENCHFLOW, _env
from tests.launch.harness import ROUTER_COMMAND

pytestmark = pytest.mark.integration


def test_a_campaign_against_two_replicas_behind_a_router(tmp_path):
    sim = [sys.executable, "-m", "benchflow", "sim", "--host", "{host}", "--port", "{port}", "--model", "{model}",
           "--time-scale", "0.05", "--served-model-name", "{model}", "{engine_args}"]
    spec = {
        "name": "router-pair", "allow_simulated": True, "model": {"name": "sim-model"},
        "backends": [{"name": "pair", "kind": "sim", "launcher": "process", "command": sim, "replicas": 2,
                      "env": {"ROUTER_MARK": str(tmp_path)},
                      "router": {"command": ROUTER_COMMAND, "env": {"ROUTER_MARK": str(tmp_path)}}}],
        "workload": {"dataset": "D(16,32)", "seed": 1, "max_requests": 40,
                     "load_points": [{"concurrency": 4}]},
        "repetitions": 1,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run([BENCHFLOW, "run", str(path), "--campaign-id", "pair-1"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    home = tmp_path / "home"
    metrics = sorted(home.rglob("server_metrics.parquet"))
    assert metrics, sorted(str(p.relative_to(home)) for p in home.rglob("*"))[:60]
    df = pd.read_parquet(metrics[0])
    ok = df[df["metric"] == "vllm:request_success_total"]
    last: dict[str, float] = {}
    for labels, group in ok.groupby("labels"):
        replica = json.loads(labels)["replica"]
        last[replica] = last.get(replica, 0.0) + group.sort_values("t_ns")["value"].iloc[-1]
    assert set(last) == {"r0", "r1"} and min(last.values()) > 0, last
    stored = home / "artifacts" / "campaigns" / "pair-1" / "backend-pair.log"
    text = stored.read_text(errors="replace")
    # the stored backend log is every part's, prefixed: the router's and each replica's
    assert "[router] " in text and "[r0] " in text and "[r1] " in text, text[-3000:]
    assert "Router ready" in text and "Shutting down" in text
    leftover = [p.pid for p in psutil.process_iter() if _mark(p.pid) == str(tmp_path)]
    assert leftover == [], "a replica or the router outlived the campaign"


def _mark(pid: int) -> str:
    try:
        return psutil.Process(pid).environ().get("ROUTER_MARK", "")
    except psutil.Error:
        return ""
