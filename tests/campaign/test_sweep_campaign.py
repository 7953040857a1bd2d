"""Sweeps and SLO capacity end to end on the simulator over real HTTP.

1. The engine drives a ``sweep`` of 6 points against a simulator process: throughput rises with
   the rate to a plateau, TTFT rises sharply near saturation, and the points beyond saturation are
   recorded and flagged.
2. ``benchflow run`` (the embedded default: SQLite, a local folder, the campaign flow) on a spec that
   mixes ``concurrency``, ``rate``, ``sweep`` and ``slo_capacity``, then ``benchflow report`` prints the
   capacity with its interval.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchflow.engine import BackendSteps, run_backend
from benchflow.runner import measure_cell_sync
from benchflow.spec import load_spec
from tests.support.sim_process import SimServer

pytestmark = pytest.mark.integration

BENCHFLOW = str(Path(sys.executable).parent / "benchflow")
REPO = Path(__file__).resolve().parents[2]
SIM_ARGS = {"max-num-seqs": 4, "time-scale": 0.5}


class _Launcher:
    def __init__(self, server: SimServer):
        self.server, self.url = server, server.url

    def logs(self) -> str:
        return "".join(self.server.lines)

    def alive(self) -> str | None:
        rc = self.server.proc.poll()
        return None if rc is None else f"exit code {rc}"


def _sweep_spec() -> Any:
    return load_spec({
        "name": "sweep-e2e", "allow_simulated": True, "model": {"name": "sim-model"},
        "backends": [{"name": "sim", "kind": "sim", "engine_args": SIM_ARGS}],
        "workload": {"dataset": "D(64,32)", "seed": 3, "max_requests": 40, "max_duration_s": "40s",
                     "request_timeout_s": "60s",
                     "load_points": [{"sweep": {"points": 6, "saturating_concurrency": 32, "up_to": 1.6}}]},
        "repetitions": 1, "limits": {"stall_after_s": "20s"},
    })


def test_a_six_point_sweep_rises_to_a_plateau_ttft_climbs_near_saturation_and_overload_is_flagged():
    spec = _sweep_spec()
    rows: dict[str, dict] = {}
    server = SimServer(*[a for k, v in SIM_ARGS.items() for a in (f"--{k}", str(v))])
    try:
        launcher = _Launcher(server)

        def persist(cell, row, summary, artifacts):
            rows[cell.id] = {**row, "summary": summary or {}}

        steps = BackendSteps(
            deploy=lambda backend: launcher, teardown=lambda launcher, grace: launcher.logs(),
            run_cell=lambda backend, cell, launcher, stop: measure_cell_sync(spec, cell, launcher.url,
                                                                             alive=launcher.alive, should_stop=stop),
            persist_cell=persist,
            stored_cell=lambda cid: ({"status": rows[cid]["status"], "summary": rows[cid]["summary"]}
                                     if cid in rows else None))
        result = run_backend(steps, spec, spec.backends[0], spec.cells())
    finally:
        server.stop()
    assert result.measured == 8 and not result.failed, {r["load_label"]: r["error"] for r in rows.values()}
    by = {r["load_label"]: r for r in rows.values()}
    sync_rate = by["sweep6-sync"]["summary"]["request_throughput"]
    sat_rate = by["sweep6-max"]["summary"]["request_throughput"]
    points = [by[f"sweep6-p{k}"] for k in range(1, 7)]
    targets = [p["load_point"]["rate"] for p in points]
    achieved = [p["summary"]["request_throughput"] for p in points]
    ttft_p50 = [p["summary"]["ttft_ms"]["p50"] for p in points]
    beyond = [p["load_point"]["beyond_saturation"] for p in points]
    report = {"sync": sync_rate, "saturating": sat_rate, "targets": targets, "achieved": achieved,
              "ttft_p50_ms": ttft_p50, "beyond": beyond, "status": [p["status"] for p in points]}
    print("sweep curve:", json.dumps(report))
    assert sat_rate > 2 * sync_rate, report
    assert targets == sorted(targets) and targets[-1] == pytest.approx(1.6 * sat_rate, rel=1e-3), report
    # below saturation the backend keeps up; beyond it, throughput stays at the plateau
    under = [i for i, t in enumerate(targets) if t < 0.8 * sat_rate]
    assert under and all(achieved[i] >= 0.7 * targets[i] for i in under), report
    assert achieved[0] < achieved[len(under) - 1] or len(under) == 1, report
    assert max(achieved) <= 1.25 * sat_rate, "throughput plateaus at the saturating run's rate"
    # TTFT: flat at low load, then sharply higher near and beyond saturation
    assert ttft_p50[-1] >= 3 * ttft_p50[0], report
    assert beyond == [t > sat_rate for t in targets] and beyond[-1], "points past the saturating rate are flagged"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENCHFLOW_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), BENCHFLOW_HOME=str(tmp_path / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "storage"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), BENCHFLOW_GPU_SLOTS="off",
               COLUMNS="200")
    return env


def test_a_campaign_mixing_every_load_point_kind_runs_and_reports_the_capacity_with_its_interval(tmp_path):
    pytest.importorskip("benchflow.stats.capacity", reason="SLO-capacity search (issue 13, engineer capacity)")
    spec = yaml.safe_load((REPO / "deployments/campaigns/sweep.yaml").read_text())
    spec["workload"].update(max_requests=16, max_duration_s="4s")  # the example, shorter
    spec["workload"]["load_points"][3]["slo_capacity"].update(min_rate=6, precision=0.3)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = _env(tmp_path)
    run = subprocess.run([BENCHFLOW, "run", str(path), "--campaign-id", "mixed-1"], env=env, capture_output=True,
                         text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    report = subprocess.run([BENCHFLOW, "report", "mixed-1"], env=env, capture_output=True, text=True, timeout=300)
    text = report.stdout
    print(text)
    assert report.returncode == 0, report.stderr[-3000:]
    line = next((x for x in text.splitlines() if "SLO capacity" in x and "req/s" in x), None)
    assert line is not None, text
    m = re.search(r"SLO capacity ([\d.]+) req/s, 95% CI ([\d.]+)–([\d.]+) \((\w+)\)", line)
    assert m and m.group(4) in ("found", "below_min", "above_max", "bracket_only"), line
    assert float(m.group(2)) <= float(m.group(1)) <= float(m.group(3)), line
    assert "Load sweeps" in text and re.search(r"sim\s+sweep4\s+p4\s", text), text
    assert re.search(r"^c2\s+sim\s", text, re.M) and re.search(r"^r2-poisson\s+sim\s", text, re.M), text
    campaign_dir = tmp_path / "home" / "artifacts" / "campaigns" / "mixed-1"
    doc = json.loads((campaign_dir / "capacity-sim-slocap.json").read_text())
    # the report rounds to the digits its interval supports; the stored search keeps the full value
    assert float(m.group(2)) <= doc["capacity_rps"] <= float(m.group(3)) and doc["probes"], doc
    assert all(p["cell_id"] for p in doc["probes"]), "every probe names the cell that measured it"
    chart = (campaign_dir / "charts" / "latency-throughput.svg").read_text()
    assert "series-lt-sim_sweep4-ttft_ms-p50" in chart and "series-lt-sim-ttft_ms-p50" in chart, \
        "the sweep is its own curve beside the fixed load points"
    # a second run of the same campaign measures nothing again and reports the same capacity
    again = subprocess.run([BENCHFLOW, "run", str(path), "--campaign-id", "mixed-1"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "nothing to measure" in again.stdout + again.stderr
    assert line in again.stdout, "the resumed campaign replays the stored probes to the same capacity"
