"""Virtual-time trials (benchflow.tuning.virtual): the study's own objective code over a simulated
engine. Only the measurement is virtual; values and constraints come from the same code as a real
trial's, so the same summary gives the same values and constraints on both paths."""

from __future__ import annotations

from datetime import UTC, datetime

import optuna
import pytest

from benchflow.engine import BackendSteps
from benchflow.errors import BackendStartError
from benchflow.runner import CellOutcome
from benchflow.sim.config import OOM_MESSAGE
from benchflow.tuning.spec import load_tuning_spec
from benchflow.tuning.study import run_study
from benchflow.tuning.virtual import cached_steps, evaluate_config, virtual_steps, virtual_summary
from tests.engine.fakes import FakeLauncher

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec(**over):
    data = {"name": "v", "model": "sim-llama-8b", "allow_simulated": True, "backend": {"name": "sim", "kind": "sim"},
            "search_space": {"max-num-seqs": {"type": "categorical", "choices": [2, 8, 16]},
                             "max-num-batched-tokens": {"type": "categorical", "choices": [8, 1024]},
                             "enable-chunked-prefill": {"type": "bool"},
                             "gpu-memory-utilization": {"type": "categorical", "choices": [0.1, 0.9]}},
            "constraints": ["max-num-batched-tokens >= max-num-seqs"],
            "workload": {"dataset": "D(128,16)", "seed": 3, "load_points": [{"concurrency": 8}], "max_requests": 16,
                         "warmup_requests": 2, "max_duration_s": "60s", "request_timeout_s": "30s"},
            "objective": {"load_point": "c8", "metrics": {"output_throughput": "maximize"}},
            "slo": {"ttft": {"p99": "300ms"}, "tpot": {"p99": "20ms"}},
            "sampler": {"name": "grid", "seed": 1}, "trials": {"count": 24}}
    data.update(over)
    return load_tuning_spec(data)


class ReplaySteps:
    """The real path's shape (a launcher, a run_cell that returns the runner's CellOutcome with
    the cell's summary), replaying summaries recorded from the virtual run."""

    def __init__(self, summaries, start_failures):
        self.summaries, self.start_failures = summaries, start_failures

    def steps_for(self, cspec, cid):
        key = repr(sorted(cspec.backends[0].engine_args.items()))

        def deploy(backend):
            if key in self.start_failures:
                raise self.start_failures[key]
            return FakeLauncher(backend.name, 1)

        def run_cell(backend, cell, launcher, should_stop):
            now = datetime.now(UTC)
            status, error, summary = self.summaries[key]
            return CellOutcome(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                               repetition=cell.repetition, started_at=now, finished_at=now, status=status,
                               summary=summary, error=error)

        return BackendSteps(deploy=deploy, teardown=lambda launcher, grace: launcher.text, run_cell=run_cell,
                            persist_cell=lambda c, row, s, a: None, sleep=lambda s: None)


def _by_flags(study):
    return {repr(sorted(t.user_attrs["flags"].items())): t for t in study.trials}


def test_same_summary_gives_the_same_values_and_constraints_on_the_virtual_and_the_real_path():
    s = spec()
    summaries, start_failures = {}, {}
    virtual = virtual_steps()

    def recording(cspec, cid):
        steps = virtual(cspec, cid)
        key = repr(sorted(cspec.backends[0].engine_args.items()))
        deploy, run_cell = steps.deploy, steps.run_cell

        def rec_deploy(backend):
            try:
                return deploy(backend)
            except BackendStartError as e:
                start_failures[key] = e
                raise

        def rec_cell(backend, cell, launcher, should_stop):
            out = run_cell(backend, cell, launcher, should_stop)
            summaries[key] = (out.status, out.error, out.summary)
            return out

        steps.deploy, steps.run_cell = rec_deploy, rec_cell
        return steps

    storage = optuna.storages.InMemoryStorage()
    out_v = run_study(s, storage, recording, study_id="virtual")
    out_r = run_study(s, storage, ReplaySteps(summaries, start_failures).steps_for, study_id="real")
    assert out_v.finished == out_r.finished == 24, "the grid is done on both paths"
    virt, real = (_by_flags(optuna.load_study(study_name=n, storage=storage)) for n in ("virtual", "real"))
    assert virt.keys() == real.keys() and len(virt) == 24
    kinds = set()
    virtual = cached_steps(virtual, {})
    for key, tv in virt.items():
        tr = real[key]
        assert tv.values == tr.values, key
        assert tv.constraints == tr.constraints, key
        why_v, why_r = (t.user_attrs.get("infeasible") or "feasible" for t in (tv, tr))
        assert why_v.split("\n")[0] == why_r.split("\n")[0], key  # then each path's own backend log tail
        assert tv.user_attrs["measured"] == tr.user_attrs["measured"], key
        kinds.add((tv.user_attrs["measured"], (tv.user_attrs.get("infeasible") or "feasible").split(":")[0][:20]))
        # evaluate_config (the exhaustive sweep's entry) is the same code too
        ev = evaluate_config(s, tv.user_attrs["flags"], virtual)
        if tv.user_attrs["measured"]:
            assert ev.values == tv.values and list(ev.constraints.values()) == list(tv.constraints.values())
        assert ev.feasible == (tv.user_attrs["measured"] and not tv.user_attrs.get("infeasible"))
    # the space covers every kind of outcome: feasible, SLO violated, flag constraint, start failure, 400s
    assert {k[1] for k in kinds} >= {"feasible", "SLO violated", "flag constraint brok", "backend sim never be",
                                     "no request succeeded"}, kinds


def test_out_of_memory_configuration_is_infeasible_with_the_simulators_message():
    s = spec()
    ev = evaluate_config(s, {"max-num-seqs": 8, "max-num-batched-tokens": 1024, "enable-chunked-prefill": True,
                             "gpu-memory-utilization": 0.1}, virtual_steps())
    assert not ev.feasible and ev.constraints["deployed"] == 1.0
    assert OOM_MESSAGE in ev.attrs["infeasible"]


def test_prompt_over_the_token_budget_without_chunked_prefill_gets_the_servers_400():
    s = spec()
    cs = s.trial_campaign({"max-num-seqs": 8, "max-num-batched-tokens": 8, "enable-chunked-prefill": False,
                           "gpu-memory-utilization": 0.9})
    assert virtual_summary(cs) is None
    ev = evaluate_config(s, dict(cs.backends[0].engine_args), virtual_steps())
    assert "max_num_batched_tokens=8 (chunked prefill is disabled)" in ev.attrs["infeasible"]


def test_virtual_measurement_is_deterministic_and_follows_the_workload():
    s = spec()
    cs = s.trial_campaign({"max-num-seqs": 8, "max-num-batched-tokens": 1024, "enable-chunked-prefill": True,
                           "gpu-memory-utilization": 0.9})
    a, b = virtual_summary(cs), virtual_summary(cs)
    assert a == b
    assert a["completed"] == 16 and a["failed"] == 0 and a["total_output_tokens"] == 16 * 16
    assert a["output_throughput"] > 0 and a["ttft_ms"]["p99"] >= a["ttft_ms"]["p50"] > 0


def test_max_duration_cuts_the_run_and_request_timeout_fails_requests():
    s = spec(workload={"dataset": "D(128,64)", "seed": 3, "load_points": [{"concurrency": 8}],
                       "max_requests": 64, "max_duration_s": "2s", "request_timeout_s": "1s"})
    cs = s.trial_campaign({"max-num-seqs": 2, "max-num-batched-tokens": 1024, "enable-chunked-prefill": True,
                           "gpu-memory-utilization": 0.9})
    summary = virtual_summary(cs)
    assert summary is not None and summary["duration_s"] <= 2.0 + 1e-9
    assert (summary.get("errors") or {}).get("timeout", 0) > 0


def test_cached_steps_measure_each_configuration_once():
    s = spec()
    calls = []
    base = virtual_steps()

    def counting(cspec, cid):
        steps = base(cspec, cid)
        inner = steps.run_cell
        steps.run_cell = lambda *a: calls.append(1) or inner(*a)
        return steps

    steps = cached_steps(counting, {})
    flags = {"max-num-seqs": 8, "max-num-batched-tokens": 1024, "enable-chunked-prefill": True,
             "gpu-memory-utilization": 0.9}
    first = evaluate_config(s, flags, steps)
    second = evaluate_config(s, flags, steps, number=5)
    assert first.values == second.values and len(calls) == 1


@pytest.mark.parametrize("load", [{"rate": 50, "arrival": "poisson"}])
def test_open_loop_load_points_run_in_virtual_time(load):
    s = spec(workload={"dataset": "D(128,16)", "seed": 3, "load_points": [load], "max_requests": 32,
                       "warmup_requests": 2, "max_duration_s": "60s", "request_timeout_s": "30s"},
             objective={"load_point": "r50-poisson", "metrics": {"output_throughput": "maximize"}})
    cs = s.trial_campaign({"max-num-seqs": 8, "max-num-batched-tokens": 1024, "enable-chunked-prefill": True,
                           "gpu-memory-utilization": 0.9})
    summary = virtual_summary(cs)
    assert summary["completed"] == 32 and summary["mode"] == "open"
