"""The seed experiment (issue 17) end to end: ``benchflow run`` on
deployments/campaigns/agentic-router-vs-scheduler-sim.yaml, whose first backend is a real
vllm-router (PyPI) in front of two simulator replicas and whose second is one simulator with
``--scheduling-policy priority``; once with the built-in agentic workload (the spec as written)
and once with an external multi-turn driver (the test's tau2-bench-like script) in its place.
Both specs validate. The results hold tasks/min and steps/s over the run and inside the active
window per backend and concurrency, with CIs across the three repetitions; the router's backend
has each replica's own window; and no replica, router or simulator outlives the campaign.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from benchflow.spec import load_spec
from tests.campaign.test_sweep_campaign import BENCHFLOW, _env
from tests.workload.test_driver_agent import write_agent

REPO = Path(__file__).resolve().parents[2]
GPU_SPEC = REPO / "deployments/campaigns/agentic-router-vs-scheduler.yaml"
SIM_SPEC = REPO / "deployments/campaigns/agentic-router-vs-scheduler-sim.yaml"


def _campaign_env(tmp_path: Path) -> dict[str, str]:
    env = _env(tmp_path)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # vllm-router's script
    return env


def test_both_seed_specs_validate_and_express_the_comparison(tmp_path):
    gpu, sim = load_spec(GPU_SPEC), load_spec(SIM_SPEC)
    for spec in (gpu, sim):
        router, scheduler = spec.backends
        assert router.router is not None and "{replica_urls}" in router.router.command
        assert router.router.command[0] == "vllm-router"
        assert scheduler.router is None and scheduler.engine_args["scheduling-policy"] == "priority"
        assert spec.compare.baseline == scheduler.name
        assert {"active_tasks_per_min", "active_steps_per_s"} <= set(spec.compare.metrics)
    assert [p.concurrency for p in gpu.workload.load_points] == [32, 64, 128]
    assert gpu.workload.driver is not None and "--max-concurrency {concurrency}" in " ".join(gpu.workload.driver.argv(
        url="{url}", model="{model}", concurrency="{concurrency}", output_dir="{output_dir}"))
    assert sim.backends[0].replicas == 2 and sim.workload.agentic is not None
    for path in (GPU_SPEC, SIM_SPEC):
        out = subprocess.run([BENCHFLOW, "validate", str(path)], env=_campaign_env(tmp_path), capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0 and "valid" in out.stdout, out.stdout + out.stderr


def _marked(spec: dict[str, Any], mark: str) -> dict[str, Any]:
    """Every process of the campaign (replicas, router, simulator) carries ``mark`` in its environment."""
    for backend in spec["backends"]:
        backend["env"] = {**backend.get("env", {}), "SEED_MARK": mark}
        if backend.get("router"):
            backend["router"]["env"] = {**backend["router"].get("env", {}), "SEED_MARK": mark}
    return spec


def _run(tmp_path: Path, spec: dict[str, Any], campaign_id: str) -> tuple[sqlite3.Connection, str]:
    path = tmp_path / f"{campaign_id}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run([BENCHFLOW, "run", str(path), "--campaign-id", campaign_id], env=_campaign_env(tmp_path),
                         capture_output=True, text=True, timeout=1200)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    leftover = [p.pid for p in psutil.process_iter() if _mark(p.pid) == str(tmp_path)]
    assert leftover == [], "a replica, the router or a simulator outlived the campaign"
    return sqlite3.connect(tmp_path / "home" / "benchflow.db"), out


def _mark(pid: int) -> str:
    try:
        return psutil.Process(pid).environ().get("SEED_MARK", "")
    except psutil.Error:
        return ""


def _check_results(db: sqlite3.Connection, campaign_id: str, loads: list[str], tasks: int) -> None:
    assert db.execute("select status from campaigns where id = ?", (campaign_id,)).fetchone() == ("completed",)
    cells = db.execute("select backend_name, load_label, status, error from cells where campaign_id = ?",
                       (campaign_id,)).fetchall()
    assert len(cells) == 2 * len(loads) * 3 and all(c[2] == "completed" for c in cells), cells
    summaries = [json.loads(s) for (s,) in db.execute(
        "select s.summary from cell_summaries s join cells c using (campaign_id, cell_id) where campaign_id = ? "
        "and c.backend_name = 'thunderreact'", (campaign_id,))]
    assert all(s["tasks_done"] == tasks for s in summaries), [s["tasks_done"] for s in summaries]
    # the router's backend: the KV usage is sampled per replica, and each replica's window is stored
    assert all(set(s.get("active_window_by_replica", {})) == {"r0", "r1"} for s in summaries), summaries[0]
    aggs = {(b, load, m): (n, mean, lo, hi) for b, load, m, n, mean, lo, hi in db.execute(
        "select backend_name, load_label, metric, n, mean, ci_low, ci_high from aggregates where campaign_id = ?",
        (campaign_id,))}
    for backend in ("thunderreact", "continuum"):
        for load in loads:
            for metric in ("tasks_per_min", "steps_per_s"):
                n, mean, lo, hi = aggs[(backend, load, metric)]
                assert n == 3 and lo is not None and lo <= mean <= hi, (backend, load, metric, aggs[(backend, load,
                                                                                                    metric)])
            # At the highest load the small KV caches fill: the active window exists and its rates are
            # aggregated (a CI needs all three repetitions to have a window of some length). At c4 the
            # router's replicas sit at the 70% threshold: a loaded run's windows there were one sample
            # long (zero length, so no rate) in all three repetitions, and the report said
            # "insufficient data", which is the right answer for such a window.
            n, mean, lo, hi = aggs.get((backend, load, "active_steps_per_s"), (0, None, None, None))
            if load == loads[-1]:
                assert n >= 1 and mean > 0, (backend, load, (n, mean, lo, hi))
            assert n < 3 or (lo is not None and lo <= mean <= hi)
    print({k: tuple(round(x, 2) if isinstance(x, float) else x for x in v) for k, v in sorted(aggs.items())
           if k[2] in ("tasks_per_min", "active_tasks_per_min", "steps_per_s", "active_steps_per_s")})


@pytest.mark.integration
def test_the_sim_seed_spec_runs_with_the_built_in_agentic_workload(tmp_path):
    spec = _marked(yaml.safe_load(SIM_SPEC.read_text()), str(tmp_path))
    db, out = _run(tmp_path, spec, "seed-agentic")
    _check_results(db, "seed-agentic", ["c4", "c8"], tasks=12)
    assert "active_tasks_per_min" in out and "thunderreact" in out  # the report's table


@pytest.mark.integration
def test_the_sim_seed_spec_runs_with_an_external_driver(tmp_path):
    script = write_agent(tmp_path)
    spec = _marked(yaml.safe_load(SIM_SPEC.read_text()), str(tmp_path))
    w = spec["workload"]
    del w["agentic"], w["dataset"]
    w["load_points"] = [{"concurrency": 8}]
    w["driver"] = {  # the GPU spec's tau2-bench driver, played by the test's agent script
        "command": [sys.executable, str(script), "--url", "{url}", "--model", "{model}", "--concurrency",
                    "{concurrency}", "--tasks", "16", "--turns", "3", "--prompt-words", "1100", "--turn-words", "250",
                    "--max-tokens", "32"],
        "cwd": str(tmp_path), "task_done": "FINISHED SIMULATION:", "step_done": "\\[PROFILE\\].*type=step_complete",
        "error": "(?i)(BadRequestError|maximum context length)", "expected_tasks": 16, "stuck_after_s": "60s",
        "retry_storm": {"repeats": 20, "within_s": "30s"}}
    spec["compare"]["metrics"] = ["active_tasks_per_min", "active_steps_per_s", "tasks_per_min", "steps_per_s",
                                  "tasks_outside_active_fraction"]
    db, _ = _run(tmp_path, spec, "seed-driver")
    _check_results(db, "seed-driver", ["c8"], tasks=16)
    artifacts = db.execute("select artifact_uris from cells where campaign_id = 'seed-driver'").fetchall()
    assert all("driver.log" in a for (a,) in artifacts), artifacts[:1]
