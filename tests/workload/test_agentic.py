"""The built-in agentic workload (``workload.agentic``) against the real simulator over HTTP."""

from __future__ import annotations

import statistics

import pytest
from pydantic import ValidationError

from benchflow.agentic import AgenticSpec, agentic_summary, parse_think_time, parse_turns, run_agents
from benchflow.sim.config import load_sim_config
from benchflow.sim.server import running_sim
from benchflow.spec import load_spec
from benchflow.workload import parse_notation

pytestmark = pytest.mark.integration


def test_turns_and_think_time_notation():
    assert parse_turns(5) == (5, 5) and parse_turns("D(4)") == (4, 4) and parse_turns("U(3, 8)") == (3, 8)
    assert parse_think_time("500ms") == ("constant", 0.5, 0.5)
    assert parse_think_time("U(100ms,2s)") == ("uniform", 0.1, 2.0)
    assert parse_think_time("E(1s)") == ("exponential", 1.0, 1.0)
    for bad in (0, "U(3)", "D(3,4)", "U(5,2)", "E(3)", "U(1.5,2)", True):
        with pytest.raises(ValueError):
            parse_turns(bad)
    for bad in ("2", "U(2s)", "U(2s,1s)", "D(-1s)", "E(1s,2s)", "fast"):
        with pytest.raises(ValueError):
            parse_think_time(bad)
    with pytest.raises(ValidationError):
        AgenticSpec(turns="U(3,2)")


def _spec(**workload):
    wl = {"dataset": "D(64,8)", "load_points": [{"concurrency": 2}], "max_requests": 40,
          "agentic": {"turns": "D(3)", "tasks": 4}, **workload}
    return load_spec({"name": "x", "model": "sim", "backends": [{"name": "ext", "kind": "openai",
                                                                  "url": "http://127.0.0.1:9"}], "workload": wl})


def test_spec_takes_only_concurrency_load_points_and_no_warmup():
    assert _spec().workload.agentic.tasks == 4
    for bad in ({"load_points": [{"rate": 5, "arrival": "poisson"}]}, {"warmup_requests": 2}, {"clients": 2}):
        with pytest.raises(Exception, match="agentic workloads take only"):
            _spec(**bad)
    with pytest.raises(Exception, match="turns"):
        _spec(agentic={"turns": "U(0,3)"})


async def _agents(caching: bool, **kw):
    cfg = load_sim_config({"port": 0, "model": "sim", "enable_prefix_caching": caching,
                           **kw.pop("sim", {})})
    prompts = parse_notation(kw.pop("dataset", "D(2000,8)")).generate(20, seed=0)
    spec = AgenticSpec(**{"turns": "D(4)", "think_time": "U(1ms,3ms)", "turn_tokens": 64, "tasks": 4, **kw})
    async with running_sim(cfg) as sim:
        run = await run_agents(sim.base_url, "sim", prompts, 2, spec, api="chat")
        cache = sim.server.engine.prefix_cache
        return run, (cache.hits if cache else 0)


def _later_turn_ttft_ms(run) -> float:
    steps = {s.request_id: s for s in run.steps}
    return statistics.median((r.chunks[0][0] - r.start_ns) / 1e6 for r in run.records
                             if r.succeeded and steps[r.request_id].turn > 0)


async def test_agents_resend_their_context_and_prefix_caching_cuts_later_turns_ttft():
    on, hits_on = await _agents(True)
    off, hits_off = await _agents(False)
    for run in (on, off):
        s = agentic_summary(run)
        assert s["tasks_done"] == 4 and s["steps_done"] == 16 and s["tasks_failed"] == 0
        assert s["tasks_per_min"] > 0 and s["steps_per_s"] > 0
        by_task = {}
        for st in run.steps:
            by_task.setdefault(st.task_id, []).append(run.records[st.request_id].input_tokens)
        # each turn re-sends the context: + 8 output + 64 tool tokens
        assert all(v == [2000, 2072, 2144, 2216] for v in by_task.values()), by_task
    assert hits_off == 0 and hits_on >= 4 * 3 * 1984
    assert _later_turn_ttft_ms(on) < _later_turn_ttft_ms(off)


async def test_context_overflow_fails_the_task_and_never_retries():
    run, _ = await _agents(True, sim={"max_model_len": 2100}, turns="D(50)")
    s = agentic_summary(run)
    assert s["tasks_failed"] == s["context_overflows"] == 4 and s["tasks_done"] == 0
    assert len(run.records) == 4 * 3  # turns 0 (2000 + 8) and 1 (2072 + 8) fit 2100; turn 2 (2144 + 8) does not
    assert all(r.status == 400 for r in run.records if not r.succeeded)
    assert run.stop_reason == "tasks"


async def test_max_duration_stops_agents_and_leaves_their_tasks_incomplete():
    cfg = load_sim_config({"port": 0, "model": "sim"})
    prompts = parse_notation("D(32,4)").generate(10, seed=0)
    async with running_sim(cfg) as sim:
        run = await run_agents(sim.base_url, "sim", prompts, 3, AgenticSpec(turns="D(1000)", think_time="50ms"),
                               max_duration_s=1.0)
    assert run.stop_reason == "max_duration"
    assert len(run.tasks) == 3 and all(t.status == "incomplete" and t.end_ns for t in run.tasks)
    assert agentic_summary(run)["steps_done"] > 3


def test_a_campaign_cell_runs_agents_and_stores_tasks():
    from benchflow.runner import measure_cell_sync
    from tests.support.sim_process import SimServer

    sim = SimServer("--enable-prefix-caching", "--time-scale", "0.2")
    try:
        spec = load_spec({"name": "x", "model": "sim-model",
                          "backends": [{"name": "ext", "kind": "openai", "url": sim.url}],
                          "workload": {"dataset": "D(256,8)", "load_points": [{"concurrency": 2}],
                                       "max_requests": 100, "agentic": {"turns": "U(2,3)", "tasks": 4}}})
        outcome = measure_cell_sync(spec, spec.cells()[0], sim.url, scrape_interval_s=0.5)
    finally:
        sim.stop()
    assert outcome.status == "completed", outcome.error
    s = outcome.summary
    assert s["tasks_done"] == 4 and 8 <= s["steps_done"] <= 12 and s["completed"] == s["steps_done"]
    assert "tasks.parquet" in outcome.artifacts()
    assert s["client_bound"] is False
    assert s["active_tasks_per_min"] is None or s["active_tasks_per_min"] >= 0


def test_active_window_rates_count_what_ended_inside_it():
    from benchflow.agentic import AgenticRun, StepRecord, TaskRecord

    s = int(1e9)
    steps = [StepRecord(0, i, i, i * s, (i + 1) * s, True) for i in range(10)]  # ends at 1..10 s
    tasks = [TaskRecord(0, 0, 5, 0, 5 * s, 5, "completed"), TaskRecord(1, 1, 5, 5 * s, 10 * s, 5, "completed")]
    run = AgenticRun(records=[], anchor_ns=0, anchor_at=None, mode="closed", tasks=tasks, steps=steps)
    out = agentic_summary(run, (4 * s, 8 * s))
    assert out["steps_per_s"] == pytest.approx(1.0) and out["tasks_per_min"] == pytest.approx(12.0)
    assert out["active_steps_per_s"] == pytest.approx(5 / 4)  # steps ending at 4, 5, 6, 7, 8 s
    assert out["active_tasks_per_min"] == pytest.approx(1 / 4 * 60)
    assert out["steps_outside_active_fraction"] == pytest.approx(0.5)
