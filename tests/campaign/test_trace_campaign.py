"""A ``trace`` load point in a campaign, end to end: ``benchflow run`` (the embedded default: SQLite,
a local folder, the campaign flow) replays a 200-request Mooncake-style trace against two simulator
backends (prefix caching on and off) over real HTTP, at the trace's recorded times. The cell is
stored with the trace's request count and its send-time error statistics, the simulator's
``/metrics`` show prefix-cache hits only with caching on, and ``benchflow report`` shows the replay."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.integration

BENCHFLOW = str(Path(sys.executable).parent / "benchflow")
REPO = Path(__file__).resolve().parents[2]
N = 200


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENCHFLOW_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), BENCHFLOW_HOME=str(tmp_path / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "storage"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), BENCHFLOW_GPU_SLOTS="off",
               COLUMNS="200")
    return env


def _write_trace(path: Path) -> list[dict]:
    """200 requests over ~4 s (at time scale 0.5: ~2 s): 4 groups share their first 512-token block."""
    rng = random.Random(5)
    t, rows = 0.0, []
    for i in range(N):
        t += rng.expovariate(50.0) * 1000
        rows.append({"timestamp": round(t, 3), "input_length": rng.randint(520, 700), "output_length": 2,
                     "hash_ids": [i % 4, 1000 + i]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _counter(samples: pd.DataFrame, name: str) -> float:
    rows = samples[samples["metric"] == name]
    return float(rows["value"].max()) if not rows.empty else 0.0


def test_a_trace_load_point_replays_stores_its_send_error_and_shows_prefix_hits(tmp_path):
    _write_trace(tmp_path / "trace.jsonl")
    sim_args = {"time-scale": 0.2, "max-num-seqs": 64}
    spec = {
        "name": "trace-e2e", "allow_simulated": True, "model": {"name": "sim-model"},
        "backends": [{"name": "cached", "kind": "sim", "engine_args": {**sim_args, "enable-prefix-caching": True}},
                     {"name": "uncached", "kind": "sim", "engine_args": sim_args}],
        "workload": {"dataset": "D(16,4)", "request_timeout_s": "60s", "max_duration_s": "120s",
                     "load_points": [{"trace": {"path": "trace.jsonl", "time_scale": 0.5}}]},
        "limits": {"stall_after_s": "30s"},
    }
    path = tmp_path / "trace.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = _env(tmp_path)
    check = subprocess.run([BENCHFLOW, "validate", str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"trace-x0.5: trace trace.jsonl, {N} requests over" in check.stdout, check.stdout

    run = subprocess.run([BENCHFLOW, "run", str(path), "--campaign-id", "trace-1"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    out = subprocess.run([BENCHFLOW, "report", "trace-1", "--json"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    cells = {c["backend_name"]: c for c in doc["cells"]}
    assert set(cells) == {"cached", "uncached"} and all(c["status"] == "completed" for c in cells.values()), cells
    campaign_dir = tmp_path / "home" / "artifacts" / "campaigns" / "trace-1"
    hits = {}
    for name, cell in cells.items():
        assert cell["load_label"] == "trace-x0.5" and cell["load_point"]["trace"]["time_scale"] == 0.5
        t = cell["trace"]
        assert t["requests"] == N and t["sent"] == N and t["time_scale"] == 0.5, t
        e = t["send_error_ms"]
        assert all(isinstance(e[k], float) for k in ("p50", "p99", "max")) and 0 <= e["p50"] <= e["p99"] <= e["max"]
        [folder] = [p for p in campaign_dir.rglob(cell["cell_id"]) if p.is_dir()]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["completed"] == N and summary["trace"] == t, summary
        requests = pd.read_parquet(folder / "requests.parquet")
        assert len(requests) == N and requests["scheduled_ns"].notna().all()
        samples = pd.read_parquet(folder / "server_metrics.parquet")
        hits[name] = _counter(samples, "vllm:prefix_cache_hits_total")
    print("prefix-cache hits:", hits, "send-time error (ms):", {n: c["trace"]["send_error_ms"] for n, c in cells.items()})
    assert hits["cached"] > 0 and hits["uncached"] == 0, hits

    report = subprocess.run([BENCHFLOW, "report", "trace-1"], env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Trace replays:" in report.stdout and f"{N} of {N} requests sent" in report.stdout, report.stdout
    assert "send-time error vs the recorded times: p50" in report.stdout, report.stdout
