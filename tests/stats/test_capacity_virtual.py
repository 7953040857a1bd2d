"""The SLO-capacity search on the simulator in virtual time, against a fine grid of rates.

bench/capacity.py measures the same over 100 seeded searches (coverage, cells, error); this
test is its small, fast version.
"""

from __future__ import annotations

import math

from benchflow.stats.capacity import search_capacity
from benchflow.stats.capacity_virtual import VirtualScenario, geometric_grid

TARGET = 0.95
SEARCH = {"attainment": TARGET, "min_rate": 4.0, "max_rate": 64.0, "precision": 0.05, "repetitions": 3}
GRID_STEP = 0.03
GRID = geometric_grid(5.0, 13.0, GRID_STEP)


def test_search_agrees_with_the_fine_grid_on_its_own_seeds_and_its_interval_covers_the_truth():
    scenario = VirtualScenario()
    # Searches 0 and 1: every repetition against the fine grid over the same seed and workload.
    own_grid = []
    for run in (0, 1):
        res = search_capacity(scenario.probe(run), seed=run, **SEARCH)
        assert res.status == "found"
        assert len(res.probes) < len(GRID) * SEARCH["repetitions"] / 3  # far fewer cells than the grid
        for rep in res.repetitions:
            truth = scenario.grid_capacity((run, rep["repetition"]), GRID, TARGET)
            assert truth is not None
            own_grid.append(truth)
            assert abs(rep["capacity_rps"] / truth - 1) <= SEARCH["precision"] + GRID_STEP, (rep, truth)
    # Their seeds' grid capacities make the ground truth for the other searches.
    truth = math.exp(sum(map(math.log, own_grid)) / len(own_grid))
    covered = []
    for run in range(2, 8):
        res = search_capacity(scenario.probe(run), seed=run, **SEARCH)
        assert res.status == "found" and res.ci_low < res.capacity_rps < res.ci_high
        covered.append(res.ci_low <= truth <= res.ci_high)
    assert sum(covered) >= 5, (truth, covered)
