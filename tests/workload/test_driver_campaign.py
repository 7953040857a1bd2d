"""The sim version of deployments/campaigns/agentic-router-vs-scheduler.yaml: the same spec with
two simulator backends in place of the GPU ones (the default scheduler against
``--scheduling-policy priority``; the router of the first backend is another change of issue 17)
and the small multi-turn agent script in place of tau2-bench. The engine runs every cell, and the
aggregates give tasks/min and steps/s in the active window per backend and concurrency, with CIs
across the repetitions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchflow.analysis import aggregate_rows
from benchflow.engine import BackendSteps, run_backend
from benchflow.runner import measure_cell_sync
from benchflow.spec import load_spec
from tests.support.sim_process import SimServer
from tests.workload.test_driver_agent import write_agent

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "deployments/campaigns/agentic-router-vs-scheduler.yaml"
#: A small KV cache (436 blocks) that a few agents' growing contexts fill above 70%.
SIM_ARGS = {"time-scale": "0.2", "gpu-memory-utilization": "0.22", "max-model-len": "4096"}


class _Launcher:
    def __init__(self, server: SimServer):
        self.server, self.url = server, server.url

    def logs(self) -> str:
        return "".join(self.server.lines)

    def alive(self) -> str | None:
        rc = self.server.proc.poll()
        return None if rc is None else f"exit code {rc}"


def sim_version(script: Path) -> dict[str, Any]:
    """The seed spec, with simulator backends, the test's agent script and a smaller matrix."""
    spec = yaml.safe_load(SEED.read_text())
    spec["allow_simulated"] = True
    spec["model"] = {"name": "sim-model"}
    # stand-ins: the router (ThunderReact) is not there yet; the scheduler policy (Continuum) is
    # the simulator's own --scheduling-policy (requests carry no priority: the same order as fcfs)
    spec["backends"] = [{"name": "thunderreact", "kind": "sim", "engine_args": dict(SIM_ARGS)},
                        {"name": "continuum", "kind": "sim",
                         "engine_args": {**SIM_ARGS, "scheduling-policy": "priority"}}]
    w = spec["workload"]
    w["load_points"] = [{"concurrency": 2}, {"concurrency": 4}]
    w["max_duration_s"] = "3m"
    w["driver"].update(
        command=[sys.executable, str(script), "--url", "{url}", "--model", "{model}", "--concurrency",
                 "{concurrency}", "--tasks", "6", "--turns", "3", "--prompt-words", "1500", "--turn-words", "300",
                 "--max-tokens", "32"],
        cwd=str(script.parent), expected_tasks=6, stuck_after_s="60s")
    spec["repetitions"] = 3
    return spec


def test_the_seed_spec_validates_as_written():
    spec = load_spec(SEED)
    assert [b.name for b in spec.backends] == ["thunderreact", "continuum"]
    assert [p.concurrency for p in spec.workload.load_points] == [32, 64, 128]
    assert "active_tasks_per_min" in spec.compare.metrics


def test_sim_version_of_the_agentic_spec_reports_active_window_rates_with_cis(tmp_path):
    spec = load_spec(sim_version(write_agent(tmp_path)))
    rows: dict[str, dict] = {}
    for backend in spec.backends:
        args = [a for k, v in backend.engine_args.items() for a in (f"--{k}", str(v))]
        server = SimServer(*args)
        try:
            launcher = _Launcher(server)
            steps = BackendSteps(
                deploy=lambda backend, launcher=launcher: launcher,
                teardown=lambda launcher, grace: launcher.logs(),
                run_cell=lambda backend, cell, launcher, stop: measure_cell_sync(
                    spec, cell, launcher.url, alive=launcher.alive, should_stop=stop, scrape_interval_s=0.1),
                persist_cell=lambda cell, row, summary, artifacts: rows.__setitem__(
                    cell.id, {**row, "summary": summary or {}, "artifacts": sorted(artifacts)}),
                stored_cell=lambda cid: None)
            result = run_backend(steps, spec, backend, [c for c in spec.cells() if c.backend == backend.name])
        finally:
            server.stop()
        assert not result.failed, {r["load_label"]: r["error"] for r in rows.values()}
    assert len(rows) == 12
    for r in rows.values():
        assert r["status"] == "completed" and r["summary"]["tasks_done"] == 6, r["error"]
        assert "driver.log" in r["artifacts"] and r["summary"]["steps_done"] == 18
    aggs = {(a.backend_name, a.load_label, a.metric): a
            for a in aggregate_rows(list(rows.values()), list(spec.compare.metrics))}
    for backend in ("thunderreact", "continuum"):
        for load in ("c2", "c4"):
            tasks = aggs[(backend, load, "tasks_per_min")]
            assert tasks.n == 3 and tasks.ci_low is not None and tasks.ci_low <= tasks.mean <= tasks.ci_high
    # four agents fill the small KV cache: the active window exists and its rates get a CI
    for backend in ("thunderreact", "continuum"):
        active = aggs[(backend, "c4", "active_steps_per_s")]
        assert active.n >= 1 and active.mean > 0, active
    print({k: (round(a.mean, 1), a.ci_low and round(a.ci_low, 1), a.ci_high and round(a.ci_high, 1), a.n)
           for k, a in aggs.items() if a.n and a.mean is not None})
