"""Two ``benchflow run`` processes at once on one embedded SQLite home (issue 11's matrix).

Both start together on a fresh ``BENCHFLOW_HOME``, so they also race to create the schema. Both
must complete, every cell and summary of each must be in the one database, and no write may fail
with SQLite's "database is locked".
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import CLI_TIMEOUT_S, Home, processes_with, sim_backend, stop_tree, wait_gone, write_spec

pytestmark = pytest.mark.integration

REPETITIONS = 3


def test_two_concurrent_runs_on_one_sqlite_home_both_complete_with_every_row(home: Home, tmp_path: Path):
    seed = random.randrange(10**6, 10**7)
    runs = {}
    for i, cid in enumerate(("twin-a", "twin-b")):
        spec = write_spec(tmp_path / f"{cid}.yaml", [sim_backend("solo", seed=seed + i)], name=cid,
                          repetitions=REPETITIONS, max_requests=6, load_points=[{"concurrency": 2}])
        runs[cid] = (spec, tmp_path / f"{cid}.log")
    procs = {cid: home.start("run", str(spec), "--campaign-id", cid, log=log) for cid, (spec, log) in runs.items()}
    try:
        codes = {cid: proc.wait(timeout=CLI_TIMEOUT_S) for cid, proc in procs.items()}
    except subprocess.TimeoutExpired:
        pytest.fail(f"a run did not finish within {CLI_TIMEOUT_S} s")
    finally:
        for proc in procs.values():
            stop_tree(proc)
    outputs = {cid: log.read_text() for cid, (_, log) in runs.items()}
    for cid, output in outputs.items():
        assert codes[cid] == 0, f"{cid}:\n{output[-3000:]}"
        assert "database is locked" not in output and "Traceback" not in output, f"{cid}:\n{output[-3000:]}"
        assert home.campaign(cid)["status"] == "completed"
        cells = home.cells(cid)
        assert len(cells) == REPETITIONS and {c["status"] for c in cells} == {"completed"}
        assert {s["cell_id"] for s in home.summaries(cid)} == {c["cell_id"] for c in cells}, "every summary stored"
        assert home.rows("SELECT count(*) AS n FROM aggregates WHERE campaign_id = ?", cid)[0]["n"] > 0
        assert (home.artifacts / "campaigns" / cid / "report.md").exists()
        for cell in cells:
            assert (home.artifacts / "campaigns" / cid / "cells" / cell["cell_id"] / "requests.parquet").exists()
    assert {r["id"] for r in home.rows("SELECT id FROM campaigns")} == set(runs)
    leftovers = processes_with(f"seed={seed}") + processes_with(f"seed={seed + 1}")
    assert not wait_gone(leftovers), "no simulator is left behind"
