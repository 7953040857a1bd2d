"""Early stop on over-saturation over real HTTP: the simulator as a process, a cell through the
runner, at twice the engine's capacity (time-scaled). The cell stops well before its duration
bound, is ``saturated`` with the evidence, keeps its records, and is left out of the aggregates."""

from __future__ import annotations

import time

import pytest

from benchflow import analysis
from benchflow.campaign import analysis_input, cell_row
from benchflow.report_words import cell_counts, invalid_cause
from benchflow.results_types import CellRow, CellSummary
from benchflow.runner import _status, measure_cell_sync
from benchflow.spec import load_spec
from benchflow.sim.virtual import VirtualRequest, run_closed_loop
from tests.sim.helpers import engine_config
from tests.support.sim_process import SimServer

pytestmark = pytest.mark.integration

#: Step costs times two: the simulator's engine serves half as fast as in virtual time.
TIME_SCALE = 2.0
MAX_DURATION_S = 90.0


def _capacity() -> float:
    run = run_closed_loop(engine_config(**{"max-num-seqs": 4}), [VirtualRequest(16, 64) for _ in range(200)], 64)
    return run.request_throughput / TIME_SCALE


@pytest.fixture(scope="module")
def sim():
    server = SimServer("--max-num-seqs", "4", "--time-scale", str(TIME_SCALE))
    yield server
    server.stop()


def _spec(url: str, rate: float, **saturation):
    return load_spec({
        "name": "sat", "model": "sim-model", "backends": [{"name": "ext", "kind": "openai", "url": url}],
        "workload": {"dataset": "D(16,64)", "load_points": [{"rate": rate, "arrival": "poisson"}], "max_duration_s": MAX_DURATION_S,
                     "request_timeout_s": 120},
        "limits": {"saturation": {"min_seconds": 6, **saturation}},
    })


def test_twice_the_capacity_stops_early_as_saturated_and_is_left_out(sim):
    rate = 2 * _capacity()
    spec = _spec(sim.url, round(rate, 2))
    cell = spec.cells()[0]
    t0 = time.monotonic()
    outcome = measure_cell_sync(spec, cell, sim.url, scrape_interval_s=1.0)
    elapsed = time.monotonic() - t0
    assert outcome.status == "saturated", outcome.error
    assert elapsed < MAX_DURATION_S / 2, "stopped by the detector, well before the duration bound"
    run, summary = outcome.run, outcome.summary
    assert run.stop_reason == "saturated" and summary["stop_reason"] == "saturated"
    evidence = summary["saturation"]
    print(f"stopped after {evidence['at_s']} s of load ({elapsed:.1f} s in all): {outcome.error}")
    assert evidence["at_s"] < MAX_DURATION_S / 2
    assert evidence["ttft"]["slope_s_per_s"]["ci_low"] > 0 and evidence["in_flight"]["slope_per_s"]["ci_low"] > 0
    assert len(evidence["in_flight"]["series"]) >= 2
    assert outcome.error.startswith("saturated: the server no longer keeps up")
    assert "saturated: the server no longer keeps up" in summary["invalid"]
    # stored with its records: the requests cut off by the stop are incomplete, not errors
    assert sum(r.succeeded for r in run.records) >= 5 and any(r.incomplete for r in run.records)
    assert summary["error_rate"] == 0.0
    assert outcome.artifacts()["requests.parquet"] and b'"saturation"' in outcome.artifacts()["summary.json"]
    row = cell_row(cell, outcome)
    assert row["status"] == "saturated" and row["error"].startswith("saturated:")
    assert CellRow.model_validate(row).status == "saturated"  # the store takes the status as it is
    # left out of the aggregates and comparisons like an invalid cell, and the report says why
    rows = analysis_input([row], {cell.id: CellSummary.model_validate(summary)})
    assert analysis.group_values(rows, ["ttft_ms.p50"]) == {}
    reason = analysis.unusable_reason(rows, "ext", cell.load_point.label)
    assert "1 saturated" in reason and "no longer keeps up" in reason
    report_cell = {**row, "summary": summary}
    assert cell_counts([report_cell])["invalid"] == 1 and cell_counts([report_cell])["failed"] == 0
    assert "saturated:" in invalid_cause(report_cell)
    # an error rate above the limit wins over saturation: the cell is an ordinary invalid one
    failing = {**summary, "error_rate": 0.5}
    outcome.summary = failing
    assert _status(outcome, None, 0.05) == ("completed", None)
    assert _status(outcome, "exit code 1", 0.05)[0] == "failed"
