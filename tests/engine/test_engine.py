"""The campaign engine with plain-function steps: every lifecycle path, no Prefect, no processes."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from benchflow.engine import MAX_REDEPLOYS, restart_due, run_backend, run_campaign
from benchflow.errors import CampaignCancelled, ResultsNotStoredError
from benchflow.gpu_slots import GpuSlotError
from tests.engine.fakes import Fakes, make_spec


def _run(spec, fakes: Fakes, **steps):
    return run_campaign(spec, "cid-1", spec.cells(), fakes.steps(**steps), fakes.finish())


def _lifecycle(fakes: Fakes) -> list[str]:
    return [e[0] for e in fakes.events if e[0] in ("deploy", "deploy-failed", "cell", "teardown", "sleep")]


def _statuses(fakes: Fakes, backend: str) -> list[str]:
    return [r["status"] for r in fakes.rows.values() if r["backend_name"] == backend]


def test_each_backend_is_deployed_once_runs_its_cells_in_order_and_is_torn_down():
    spec = make_spec([{"name": "a", "kind": "sim"}, {"name": "b", "kind": "sim"}], repetitions=2)
    fakes = Fakes()
    result = _run(spec, fakes)
    assert result.status == "completed" and result.message is None
    assert _lifecycle(fakes) == ["deploy", "cell", "cell", "teardown"] * 2
    assert [e[1] for e in fakes.events if e[0] == "deploy"] == ["a", "b"]
    assert fakes.status == ["completed"]
    assert sum(e[0] == "progress" for e in fakes.events) == 4
    assert ("backend-log", "a") in fakes.events and ("report",) in fakes.events
    assert all(f.stopped for f in fakes.launchers)


def test_completed_cells_are_not_run_again():
    spec = make_spec(repetitions=3)
    fakes = Fakes()
    done = {spec.cells()[0].id}
    run_campaign(spec, "cid-1", spec.cells(), fakes.steps(), fakes.finish(), done=done)
    assert fakes.cells_run == 2


def _gpu_spec(on_unhealthy: str):
    return make_spec([{"name": "gpu", "kind": "sim", "gpus": [1]}, {"name": "cpu", "kind": "sim"}],
                     repetitions=2, health={"on_unhealthy": on_unhealthy})


def test_unhealthy_gpu_fails_the_backends_cells_with_the_reasons_and_deploys_nothing():
    fakes = Fakes(unhealthy={"gpu"})
    result = _run(_gpu_spec("fail"), fakes)
    assert result.status == "failed" and "GPU health check failed: GPU 1: ECC errors" in result.message
    assert _statuses(fakes, "gpu") == ["failed", "failed"]
    assert [e[1] for e in fakes.events if e[0] == "deploy"] == ["cpu"], "the healthy backend still runs"
    assert ("health", False) in fakes.events, "the report is stored"
    assert fakes.status == ["failed"]


def test_unhealthy_gpu_skips_the_backend_when_the_spec_says_so():
    fakes = Fakes(unhealthy={"gpu"})
    result = _run(_gpu_spec("skip"), fakes)
    assert result.status == "completed"
    assert _statuses(fakes, "gpu") == ["skipped", "skipped"]
    assert result.backends[0].skipped == 2 and result.backends[0].unhealthy


def test_healthy_gpu_backend_records_the_gpu_uuids():
    fakes = Fakes()
    _run(_gpu_spec("fail"), fakes)
    assert {tuple(r["gpu_uuids"]) for r in fakes.rows.values() if r["backend_name"] == "gpu"} == {("GPU-1234",)}


def test_backend_that_never_becomes_ready_fails_its_cells_and_the_next_backend_runs():
    spec = make_spec([{"name": "a", "kind": "sim"}, {"name": "b", "kind": "sim"}], repetitions=2)
    fakes = Fakes(never_ready={"a"})
    result = _run(spec, fakes)
    assert result.status == "failed"
    assert _statuses(fakes, "a") == ["failed", "failed"]
    assert all("never became ready" in r["error"] and "oom!" in r["error"]
               for r in fakes.rows.values() if r["backend_name"] == "a"), "the log tail is in the error"
    assert ("backend-log", "a") in fakes.events
    assert _statuses(fakes, "b") == ["completed", "completed"]
    assert result.backends[0].never_ready


def test_backend_that_died_mid_cell_is_redeployed_for_the_rest_and_the_cause_is_in_the_error():
    spec = make_spec(repetitions=3)
    fakes = Fakes(script={("a", 0): "die"})
    result = _run(spec, fakes)
    assert _lifecycle(fakes) == ["deploy", "cell", "teardown", "deploy", "cell", "cell", "teardown"]
    assert _statuses(fakes, "a") == ["failed", "completed", "completed"]
    failed = next(r for r in fakes.rows.values() if r["status"] == "failed")
    assert failed["error"].startswith("backend died during the cell (exit code 1)")
    assert "simulated crash (--crash-after 3)" in failed["error"], "the backend's last lines are in the error"
    assert b"simulated crash" in failed["artifacts"]["backend.log"], "the cell keeps its slice of the log"
    assert b"started" not in failed["artifacts"]["backend.log"], "only the lines logged during the cell"
    assert result.status == "failed" and "backend died" in result.message
    assert result.backends[0].redeploys == 1 and not result.backends[0].gave_up


def test_backend_that_keeps_dying_is_given_up_after_max_redeploys():
    spec = make_spec(repetitions=6)
    fakes = Fakes(script={("a", k): "die" for k in range(10)})
    result = _run(spec, fakes)
    assert fakes.cells_run == MAX_REDEPLOYS + 1
    assert sum(e[0] == "deploy" for e in fakes.events) == MAX_REDEPLOYS + 1
    assert sum(e[0] == "teardown" for e in fakes.events) == MAX_REDEPLOYS + 1
    statuses = _statuses(fakes, "a")
    assert statuses == ["failed"] * 6
    gave_up = [r for r in fakes.rows.values() if "giving up" in (r["error"] or "")]
    assert len(gave_up) == 6 - (MAX_REDEPLOYS + 1)
    assert "died 3 times" in gave_up[0]["error"]
    assert result.backends[0].gave_up and result.status == "failed"


def test_stalled_cell_is_treated_as_a_dead_backend_and_redeployed():
    spec = make_spec(repetitions=2)
    fakes = Fakes(script={("a", 0): "stall"})
    result = _run(spec, fakes)
    assert _lifecycle(fakes) == ["deploy", "cell", "teardown", "deploy", "cell", "teardown"]
    stalled = fakes.rows[spec.cells()[0].id]
    assert stalled["status"] == "stalled" or (stalled["status"] == "failed" and "stalled" in stalled["error"])
    assert "no token from 4 in-flight requests" in stalled["error"], "the evidence is kept"
    assert result.backends[0].redeploys == 1


def test_restart_per_cell_deploys_a_fresh_backend_for_every_cell():
    spec = make_spec([{"name": "a", "kind": "sim", "restart": "per_cell"}], repetitions=3)
    fakes = Fakes()
    result = _run(spec, fakes)
    assert _lifecycle(fakes) == ["deploy", "cell", "teardown"] * 3
    assert result.status == "completed" and result.backends[0].redeploys == 0


def test_restart_per_repetition_deploys_a_fresh_backend_when_the_repetition_changes():
    spec = make_spec([{"name": "a", "kind": "sim", "restart": "per_repetition"}], repetitions=2,
                     load_points=[{"concurrency": 1}, {"concurrency": 2}])
    cells = spec.cells()
    fakes = Fakes()
    _run(spec, fakes)
    changes = sum(restart_due("per_repetition", p, c) for p, c in zip(cells, cells[1:]))
    assert changes >= 1
    assert sum(e[0] == "deploy" for e in fakes.events) == 1 + changes
    assert sum(e[0] == "teardown" for e in fakes.events) == 1 + changes
    # within one deploy, every cell has the same repetition
    reps, current = [], None
    for e in fakes.events:
        if e[0] == "deploy":
            current = set()
            reps.append(current)
        elif e[0] == "cell":
            current.add(e[3])
    assert all(len(r) == 1 for r in reps)


def test_startup_grace_waits_after_every_deploy_before_the_first_cell():
    spec = make_spec([{"name": "a", "kind": "sim", "startup_grace_s": "5s"}], repetitions=2)
    fakes = Fakes(script={("a", 0): "die"})
    _run(spec, fakes)
    assert _lifecycle(fakes) == ["deploy", "sleep", "cell", "teardown", "deploy", "sleep", "cell", "teardown"]
    assert [e[1] for e in fakes.events if e[0] == "sleep"] == [5.0, 5.0]


def test_cancel_between_cells_tears_down_keeps_measured_cells_and_ends_cancelled():
    spec = make_spec([{"name": "a", "kind": "sim"}, {"name": "b", "kind": "sim"}], repetitions=3)
    fakes = Fakes(cancel_after_cells=1)
    result = _run(spec, fakes)
    assert result.status == "cancelled" and "cancel requested from the Prefect UI" in result.message
    assert _lifecycle(fakes) == ["deploy", "cell", "teardown"]
    assert _statuses(fakes, "a") == ["completed"], "the measured cell is stored; the rest never ran"
    assert fakes.status == ["cancelled"]
    assert ("report",) not in fakes.events


def test_cancel_mid_cell_stops_the_cell_stores_it_and_ends_cancelled():
    spec = make_spec(repetitions=3)
    fakes = Fakes(script={("a", 1): "cancel"})
    result = _run(spec, fakes)
    assert result.status == "cancelled"
    assert _lifecycle(fakes) == ["deploy", "cell", "cell", "teardown"]
    rows = list(fakes.rows.values())
    assert [r["status"] for r in rows][0] == "completed"
    assert "cancel" in rows[1]["error"] and rows[1]["status"] in ("failed", "cancelled")
    assert fakes.status == ["cancelled"] and all(f.stopped for f in fakes.launchers)


def test_cancel_before_a_backend_starts_deploys_nothing():
    spec = make_spec(repetitions=1)
    fakes = Fakes(cancel_after_cells=0)
    result = _run(spec, fakes)
    assert result.status == "cancelled" and not fakes.launchers


def test_results_that_cannot_be_stored_stop_the_campaign_cleanly_with_one_message():
    spec = make_spec([{"name": "a", "kind": "sim"}, {"name": "b", "kind": "sim"}], repetitions=3)
    error = ResultsNotStoredError("cell a-c1-r1 could not be stored nor spooled to /spool: [Errno 28] "
                                  "No space left on device")
    fakes = Fakes(persist_raises=error, persist_raises_at=1)
    result = _run(spec, fakes)
    assert result.status == "failed"
    assert result.message == f"campaign cid-1 stopped: {error}"
    assert _lifecycle(fakes) == ["deploy", "cell", "cell", "teardown"], "torn down; backend b never starts"
    assert fakes.status == ["failed"], "never left running"


def test_the_first_storage_error_is_the_one_reported_when_the_backend_log_cannot_be_stored_either():
    spec = make_spec(repetitions=2)
    error = ResultsNotStoredError("cell c1 could not be stored nor spooled to /spool: [Errno 28]")
    fakes = Fakes(persist_raises=error, persist_raises_at=0)

    def log_fails(name, text):
        raise ResultsNotStoredError("backend log could not be stored either")

    result = _run(spec, fakes, persist_backend_log=log_fails)
    assert result.message == f"campaign cid-1 stopped: {error}"
    assert fakes.launchers[0].stopped and fakes.status == ["failed"]


def test_an_unexpected_exception_fails_the_campaign_with_its_cause_after_teardown():
    spec = make_spec(repetitions=2)
    fakes = Fakes(script={("a", 0): "raise"})
    result = _run(spec, fakes)
    assert result.status == "failed"
    assert "RuntimeError: the runner blew up" in result.message
    assert _lifecycle(fakes) == ["deploy", "cell", "teardown"]
    assert fakes.status == ["failed"]


def test_an_exception_in_the_finish_fails_the_campaign_with_its_cause():
    spec = make_spec(repetitions=1)
    fakes = Fakes()

    def broken(rows, metrics, seed):
        raise ValueError("bad statistics")

    result = run_campaign(spec, "cid-1", spec.cells(), fakes.steps(), fakes.finish(aggregate=broken))
    assert result.status == "failed" and "ValueError: bad statistics" in result.message
    assert fakes.status == ["failed"]


def test_a_termination_signal_passes_through_after_teardown():
    spec = make_spec(repetitions=2)
    fakes = Fakes()

    def interrupted(backend, cell, launcher, should_stop):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_campaign(spec, "cid-1", spec.cells(), fakes.steps(run_cell=interrupted), fakes.finish())
    assert [e[0] for e in fakes.events if e[0] in ("deploy", "teardown")] == ["deploy", "teardown"]


def test_gpu_slots_that_cannot_be_taken_fail_the_backends_cells():
    spec = make_spec(repetitions=2)
    fakes = Fakes()

    @contextmanager
    def busy(backend):
        raise GpuSlotError("GPU slot(s) gpu-h-0 still busy after 1s")
        yield

    result = _run(spec, fakes, gpu_slots=busy)
    assert not fakes.launchers and _statuses(fakes, "a") == ["failed", "failed"]
    assert "still busy" in result.message


def test_gpu_slots_are_held_from_health_gate_to_teardown():
    spec = make_spec(repetitions=1)
    fakes = Fakes()

    @contextmanager
    def slots(backend):
        fakes.events.append(("slots-taken", backend.name))
        yield ["gpu-h-0"]
        fakes.events.append(("slots-released", backend.name))

    _run(spec, fakes, gpu_slots=slots)
    kinds = [e[0] for e in fakes.events if e[0] in ("slots-taken", "deploy", "teardown", "slots-released")]
    assert kinds == ["slots-taken", "deploy", "teardown", "slots-released"]


def test_run_backend_alone_reports_what_happened_and_raises_on_cancel():
    spec = make_spec(repetitions=3)
    fakes = Fakes(script={("a", 0): "die"})
    result = run_backend(fakes.steps(), spec, spec.backends[0], spec.cells())
    assert (result.measured, result.failed, result.deploys, result.redeploys) == (3, 1, 2, 1)
    fakes = Fakes(cancel_after_cells=1)
    with pytest.raises(CampaignCancelled):
        run_backend(fakes.steps(), spec, spec.backends[0], spec.cells())
    assert fakes.launchers[0].stopped
