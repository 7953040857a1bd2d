"""Dynamic load points (sweep, slo_capacity) in the engine, with plain-function steps: what cells
they derive, at which rates, with which labels and ids, and what a resume, a dead backend and a
backend that never starts do to them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from benchflow.engine import run_campaign
from benchflow.engine.dynamic import CAPACITY_METRIC, sweep_rates
from benchflow.results_types import CellRow, CellSummary
from benchflow.runner import CellOutcome
from tests.engine.fakes import Fakes, make_spec

CAPACITY_RPS = 10.0   # the fake server's throughput ceiling
SLO_KNEE_RPS = 7.0    # above this rate, half the requests miss the SLO


@dataclass
class ServerFakes(Fakes):
    """A server whose throughput tops out at CAPACITY_RPS; cells store their summaries too."""

    summaries: dict[str, dict] = field(default_factory=dict)
    analysis: list[tuple] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)

    def run_cell(self, backend: Any, cell: Any, launcher: Any, should_stop) -> CellOutcome:
        k = sum(1 for e in self.events if e[0] == "cell" and e[1] == backend.name)
        outcome = super().run_cell(backend, cell, launcher, should_stop)
        if self.script.get((backend.name, k)) == "fail":  # every request failed; the backend lives
            outcome.status, outcome.error = "failed", "no request succeeded (http_500×20)"
        if outcome.status != "completed":
            return outcome
        lp = cell.load_point
        offered = lp.concurrency * 2.0 if lp.mode == "closed" else lp.rate
        outcome.summary = {"completed": 20, "failed": 0, "request_throughput": min(offered, CAPACITY_RPS),
                           "slo_attainment": 1.0 if offered <= SLO_KNEE_RPS else 0.5}
        return outcome

    def persist_cell(self, cell: Any, row: dict, summary: dict | None, artifacts: dict[str, bytes]) -> None:
        super().persist_cell(cell, row, summary, artifacts)
        self.summaries[cell.id] = dict(summary or {})

    def stored_cell(self, cell_id: str) -> dict | None:
        row = self.rows.get(cell_id)
        return None if row is None else {"status": row["status"], "summary": self.summaries.get(cell_id, {})}

    def steps(self, **overrides):
        overrides.setdefault("stored_cell", self.stored_cell)
        overrides.setdefault("persist_artifact", lambda name, data: self.artifacts.__setitem__(name, data))
        return super().steps(**overrides)

    def finish(self, **overrides):
        def stored():
            cells = [CellRow.model_validate({k: v for k, v in r.items() if k != "artifacts"})
                     for r in self.rows.values()]
            return cells, {c.cell_id: CellSummary.model_validate(self.summaries.get(c.cell_id, {})) for c in cells}

        overrides.setdefault("stored", stored)
        overrides.setdefault("aggregate", lambda rows, m, seed: self.analysis.append(("aggregate", rows)) or [])
        overrides.setdefault("compare", lambda rows, m, b, t, seed: self.analysis.append(("compare", rows)) or [])
        overrides.setdefault("persist_analysis", lambda a, c: self.analysis.append(("persisted", a)))
        return super().finish(**overrides)


def _sweep_spec(**extra):
    return make_spec(load_points=[{"concurrency": 2}, {"sweep": {"points": 4, "up_to": 1.5}}], **extra)


def _run(spec, fakes, **steps):
    return run_campaign(spec, "cid-1", spec.cells(), fakes.steps(**steps), fakes.finish())


def _labels(fakes: Fakes) -> list[str]:
    return [e[2] for e in fakes.events if e[0] == "cell"]


def test_sweep_runs_sync_then_saturating_then_points_between_their_measured_rates():
    spec, fakes = _sweep_spec(repetitions=2), ServerFakes()
    result = _run(spec, fakes)
    assert result.status == "completed", result.message
    one_rep = ["c2", "sweep4-sync", "sweep4-max", "sweep4-p1", "sweep4-p2", "sweep4-p3", "sweep4-p4"]
    assert _labels(fakes) == one_rep * 2
    points = sorted((r for r in fakes.rows.values() if r["load_point"].get("role") == "point"),
                    key=lambda r: (r["repetition"], r["load_point"]["point"]))
    # sync: 1 x 2 req/s; saturating: 128 workers capped at 10 req/s; up_to 1.5 -> up to 15 req/s
    assert [p["load_point"]["rate"] for p in points[:4]] == sweep_rates(2.0, 10.0, 4, 1.5) == [5.25, 8.5, 11.75, 15.0]
    assert [p["load_point"]["beyond_saturation"] for p in points[:4]] == [False, False, True, True]
    assert all(p["load_point"]["derived_from"] == "sweep4" and p["load_point"]["arrival"] == "poisson" for p in points)
    assert fakes.summaries[points[2]["cell_id"]]["sweep"]["saturating_rate"] == 10.0
    assert sum(e[0] == "progress" for e in fakes.events) == 4, "one progress note per spec cell"
    assert len({r["cell_id"] for r in fakes.rows.values()}) == 14


def test_sweep_cell_ids_are_deterministic_and_a_resume_measures_only_missing_cells():
    spec, first = _sweep_spec(repetitions=1), ServerFakes()
    _run(spec, first)
    again = ServerFakes(rows=dict(first.rows), summaries=dict(first.summaries))
    _run(spec, again)
    assert again.cells_run == 1 and _labels(again) == ["c2"], "the sweep is all stored: only c2 (not in done) runs"
    missing = next(cid for cid, r in first.rows.items() if r["load_label"] == "sweep4-p3")
    partial = ServerFakes(rows={k: v for k, v in first.rows.items() if k != missing}, summaries=dict(first.summaries))
    _run(spec, partial)
    assert _labels(partial) == ["c2", "sweep4-p3"], "sync and saturating cells are reused, p3 alone is measured"
    assert set(partial.rows) == set(first.rows), "the re-measured point has the same id"


def test_a_sweep_whose_cells_are_all_stored_needs_no_deploy():
    spec, first = make_spec(load_points=[{"sweep": {"points": 2}}], repetitions=1), ServerFakes()
    _run(spec, first)
    again = ServerFakes(rows=dict(first.rows), summaries=dict(first.summaries))
    result = _run(spec, again)
    assert result.status == "completed" and again.cells_run == 0
    assert not [e for e in again.events if e[0] == "deploy"]


def test_backend_dying_mid_sweep_is_redeployed_and_the_sweep_resumes_where_it_stopped():
    spec = make_spec(load_points=[{"sweep": {"points": 3}}], repetitions=1)
    fakes = ServerFakes(script={("a", 3): "die"})  # the 4th cell (sweep3-p2) kills the backend
    result = _run(spec, fakes)
    assert [e[0] for e in fakes.events if e[0] in ("deploy", "teardown")] == ["deploy", "teardown"] * 2
    assert _labels(fakes) == ["sweep3-sync", "sweep3-max", "sweep3-p1", "sweep3-p2", "sweep3-p2", "sweep3-p3"]
    assert result.status == "completed", "the re-measured point replaced its failed row"


def test_a_failed_saturating_run_leaves_the_points_unmeasured_and_the_campaign_failed():
    spec = make_spec(load_points=[{"sweep": {"points": 3}}], repetitions=1)
    fakes = ServerFakes(script={("a", 1): "fail"})
    result = _run(spec, fakes)
    assert result.status == "failed" and "sweep3-max" in result.message
    assert _labels(fakes) == ["sweep3-sync", "sweep3-max"]


def test_never_ready_backend_fails_the_first_derived_cells_which_a_resume_replaces():
    spec = make_spec(load_points=[{"sweep": {"points": 2}}, {"slo_capacity": {"min_rate": 1, "max_rate": 64}}],
                     repetitions=1, slo={"ttft": {"p99": "1s"}})
    broken = ServerFakes(never_ready={"a"})
    assert _run(spec, broken).status == "failed"
    assert sorted(r["load_label"] for r in broken.rows.values()) == ["slocap-r1", "sweep2-sync"], \
        "a sweep's first cell and a search's first probe carry the failure"
    fixed = ServerFakes(rows=dict(broken.rows), summaries=dict(broken.summaries))
    assert _run(spec, fixed).status == "completed"
    assert all(r["status"] == "completed" for r in fixed.rows.values())


def test_slo_capacity_probes_real_cells_and_stores_the_capacity_with_every_probe():
    spec = make_spec(load_points=[{"concurrency": 1},
                                  {"slo_capacity": {"min_rate": 1, "max_rate": 64, "attainment": 0.9,
                                                    "precision": 0.05}}],
                     repetitions=3, slo={"ttft": {"p99": "1s"}})
    fakes = ServerFakes()
    result = _run(spec, fakes)
    assert result.status == "completed", result.message
    probes = [r for r in fakes.rows.values() if r["load_point"].get("role") == "probe"]
    assert probes and {p["repetition"] for p in probes} == {0, 1, 2}
    assert all(p["load_label"].startswith("slocap-r") for p in probes)
    doc = json.loads(fakes.artifacts["capacity-a-slocap.json"])
    assert abs(doc["capacity_rps"] - SLO_KNEE_RPS) / SLO_KNEE_RPS < 0.1
    assert {p["cell_id"] for p in doc["probes"]} == {p["cell_id"] for p in probes}
    persisted = next(a for kind, a in fakes.analysis if kind == "persisted")
    row = next(a for a in persisted if a["metric"] == CAPACITY_METRIC)
    assert row["backend_name"] == "a" and row["load_label"] == "slocap" and row["mean"] == doc["capacity_rps"]
    assert row["ci_low"] <= row["mean"] <= row["ci_high"] and len(row["probes"]) == len(probes)
    aggregated = next(rows for kind, rows in fakes.analysis if kind == "aggregate")
    assert {r["load_label"] for r in aggregated} == {"c1"}, "probes are left out of the aggregates"
    # a resume replays the stored probes: nothing is measured, the same capacity is reported
    again = ServerFakes(rows=dict(fakes.rows), summaries=dict(fakes.summaries))
    _run(spec, again)
    assert _labels(again) == ["c1"] * 3
    persisted = next(a for kind, a in again.analysis if kind == "persisted")
    assert next(a for a in persisted if a["metric"] == CAPACITY_METRIC)["mean"] == doc["capacity_rps"]


@pytest.mark.parametrize("bound", [{"max_probes": 4}, {"max_search_s": "1s"}])
def test_a_search_out_of_probes_or_time_ends_with_its_best_bracket_labelled_bracket_only(bound, monkeypatch):
    if "max_search_s" in bound:  # every probe takes 0.6 s of a fake clock: the second one runs out of time
        ticks = iter(range(10_000))
        monkeypatch.setattr("benchflow.engine.dynamic.time.monotonic", lambda: next(ticks) * 0.6)
    spec = make_spec(load_points=[{"slo_capacity": {"min_rate": 1, "max_rate": 64, "attainment": 0.9,
                                                    "precision": 0.01, **bound}}],
                     repetitions=3, slo={"ttft": {"p99": "1s"}})
    fakes = ServerFakes()
    result = _run(spec, fakes)
    assert result.status == "completed", result.message
    doc = json.loads(fakes.artifacts["capacity-a-slocap.json"])
    assert doc["status"] == "bracket_only" and doc["capacity_rps"] is None, doc
    lo, hi = doc["bracket"]
    assert lo <= SLO_KNEE_RPS <= hi, "the best bracket found still holds the knee"
    probes = [r for r in fakes.rows.values() if r["load_point"].get("role") == "probe"]
    assert 0 < len(probes) <= 4 and len(doc["probes"]) == len(probes), "every probe run is recorded"


def test_sweep_points_are_aggregated_but_not_compared_across_backends():
    spec = make_spec([{"name": "a", "kind": "sim"}, {"name": "b", "kind": "sim"}],
                     load_points=[{"sweep": {"points": 2}}], repetitions=1)
    fakes = ServerFakes()
    _run(spec, fakes)
    labels = {kind: {r["load_label"] for r in rows} for kind, rows in fakes.analysis if kind in ("aggregate", "compare")}
    assert labels["aggregate"] == {"sweep2-sync", "sweep2-max", "sweep2-p1", "sweep2-p2"}
    assert labels["compare"] == {"sweep2-sync", "sweep2-max"}



def test_cancel_during_a_sweep_point_stops_the_campaign_with_the_measured_cells_stored():
    spec = make_spec(load_points=[{"sweep": {"points": 3}}], repetitions=1)
    fakes = ServerFakes(script={("a", 3): "cancel"})  # a cancel request arrives during sweep3-p2
    result = _run(spec, fakes)
    assert result.status == "cancelled" and "sweep3-p2" in result.message
    assert _labels(fakes) == ["sweep3-sync", "sweep3-max", "sweep3-p1", "sweep3-p2"]
    assert all(f.stopped for f in fakes.launchers), "the backend is torn down"
    assert sorted(r["load_label"] for r in fakes.rows.values() if r["status"] == "completed") == [
        "sweep3-max", "sweep3-p1", "sweep3-sync"]
