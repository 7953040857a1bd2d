"""The spec side of dynamic load points: validation messages with their paths, and the
placeholder cells ``CampaignSpec.cells()`` yields for them."""

from __future__ import annotations

import pytest

from benchflow.errors import SpecError
from benchflow.spec import load_spec


def _spec(load_points, **extra):
    backend = {"name": "a", "kind": "sim", **extra.pop("backend", {})}
    return {"name": "t", "allow_simulated": True, "model": "m", "backends": [backend],
            "workload": {"dataset": "D(8,4)", "load_points": load_points, "max_requests": 2},
            "repetitions": 3, **extra}


def _problems(data) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(data)
    return str(e.value)


@pytest.mark.parametrize("load_points, extra, expected", [
    ([{"sweep": {"points": 0}}], {}, "workload.load_points[0].sweep.points: must be >= 1"),
    ([{"sweep": {"points": 3, "pointz": 1}}], {}, "workload.load_points[0].sweep.pointz: unknown key"),
    ([{"sweep": {"points": 3, "burstiness": 0.5}}], {}, "burstiness only applies to arrival gamma"),
    ([{"sweep": {"points": 3, "up_to": 9}}], {}, "workload.load_points[0].sweep.up_to"),
    ([{"slo_capacity": {"min_rate": 1, "max_rate": 8}}], {},
     "workload.load_points[0].slo_capacity.slo: an SLO capacity needs an slo"),
    ([{"slo_capacity": {"min_rate": 8, "max_rate": 1, "slo": {"ttft": {"p99": "1s"}}}}], {},
     "max_rate (1) must be above min_rate (8)"),
    ([{"slo_capacity": {"min_rate": 1, "max_rate": 8, "slo": {"ttft": {"p99": 0.5}}}}], {},
     "workload.load_points[0].slo_capacity.slo.ttft.p99: a unit is required"),
    ([{"sweep": {"points": 3}}, {"sweep": {"points": 3, "arrival": "constant"}}], {},
     "has the label 'sweep3' of load_points[0]"),
    ([{"sweep": {"points": 3}}], {"backend": {"restart": "per_cell"}},
     "backends[0].restart: per_cell is not supported with a sweep load point"),
    ([{"slo_capacity": {"min_rate": 1, "max_rate": 8}}], {"backend": {"restart": "per_repetition"},
                                                         "slo": {"ttft": {"p99": "1s"}}},
     "backends[0].restart: per_repetition is not supported with a slo_capacity load point"),
    ([{"sweep": {"points": 100}}], {"repetitions": 1000}, "(a sweep counts points + 2 cells per repetition"),
    ([{"swept": 3}], {}, "{sweep: {points: N}} or {slo_capacity: {min_rate: R, max_rate: R}}"),
])
def test_unsupported_settings_are_refused_with_their_path(load_points, extra, expected):
    assert expected in _problems(_spec(load_points, **extra))


def test_placeholders_one_per_sweep_repetition_and_one_per_search_with_stable_ids():
    data = _spec([{"concurrency": 1}, {"sweep": {"points": 4, "name": "curve"}},
                  {"slo_capacity": {"min_rate": 1, "max_rate": 8}}], slo={"ttft": {"p99": "500ms"}})
    cells = load_spec(data).cells()
    assert [(c.load_point.label, c.repetition) for c in cells] == [
        ("c1", 0), ("curve", 0), ("slocap", 0), ("c1", 1), ("curve", 1), ("c1", 2), ("curve", 2)]
    assert [c.id for c in cells] == [c.id for c in load_spec(data).cells()]
    assert cells[0].id == load_spec(_spec([{"concurrency": 1}], slo={"ttft": {"p99": "500ms"}})).cells()[0].id, \
        "static cell ids do not change"
    sweep = cells[1].load_point
    assert sweep.sweep.arrival == "poisson" and sweep.sweep.saturating_concurrency == 128 and sweep.dynamic
