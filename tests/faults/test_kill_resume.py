"""``kill -9`` of ``benchflow run`` in the middle of a campaign, then the same command again.

The resume must measure only the cells that were not stored, keep the ones that were (not measured
again), complete the campaign, and leave no simulator behind: the one the killed run had started
is reaped. (That the killed run's ephemeral Prefect server dies too is the kill -9 fault's own
test, by its fix; here it is only cleaned up.)
"""

from __future__ import annotations

import os
import random
import re
import signal
from pathlib import Path

import pytest

from tests.faults.conftest import Home, processes_with, sim_backend, stop_tree, wait_for, wait_gone, write_spec

pytestmark = pytest.mark.integration

CID = "faults-kill-1"
REPETITIONS = 4


def test_kill_9_then_resume_measures_only_the_missing_cells_and_reaps_the_old_backend(home: Home, tmp_path: Path):
    seed = random.randrange(10**6, 10**7)
    # real-time simulator cells of a second or two, so the kill lands while cells are still to run
    spec = write_spec(tmp_path / "kill.yaml", [sim_backend("solo", seed=seed, **{"time-scale": 1.0})],
                      name="faults-kill", repetitions=REPETITIONS, max_requests=6, dataset="D(16,48)")
    proc = home.start("run", str(spec), "--campaign-id", CID, log=tmp_path / "killed.log")
    try:
        completed = lambda: [c for c in home.cells(CID) if c["status"] == "completed"]  # noqa: E731
        wait_for(completed, "first stored cell", timeout_s=240, proc=proc)
        os.kill(proc.pid, signal.SIGKILL)  # the run only, no clean-up of any kind
        proc.wait(timeout=30)
        before = {c["cell_id"]: c for c in completed()}
        assert 1 <= len(before) < REPETITIONS

        rc, output = home.benchflow("run", str(spec), "--campaign-id", CID)
    finally:
        stop_tree(proc)  # what is left of the killed run's process group
    assert rc == 0, output[-3000:]
    assert "Traceback" not in output
    assert re.search(rf"{len(before)} already completed, {REPETITIONS - len(before)} to run", output), output[-3000:]
    assert home.campaign(CID)["status"] == "completed"
    cells = {c["cell_id"]: c for c in home.cells(CID)}
    assert len(cells) == REPETITIONS and {c["status"] for c in cells.values()} == {"completed"}
    for cell_id, old in before.items():
        assert cells[cell_id]["started_at"] == old["started_at"], "a stored cell is not measured again"
    assert {s["cell_id"] for s in home.summaries(CID)} == set(cells)
    assert {r["n"] for r in home.rows("SELECT n FROM aggregates WHERE campaign_id = ?", CID)} == {REPETITIONS}
    assert not wait_gone(processes_with(f"seed={seed}")), "no simulator is left behind"
