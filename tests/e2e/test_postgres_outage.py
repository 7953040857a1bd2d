"""Postgres stops in the middle of a campaign: measured cells are spooled, nothing is lost.

The campaign runs as ``benchflow run`` in a subprocess against a Postgres of its own; the test
stops that server once the first cells are stored and watches what the flow does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchflow.spec import load_spec
from benchflow.store.spool import Spool
from tests.e2e.conftest import (
    PASSWORD,
    Deployment,
    PasswordPostgres,
    make_deployment,
    sim,
    spool_bytes,
    stop_process_group,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.integration

CID = "e2e-outage"
REPETITIONS = 6
CELL_FILES = {"requests.parquet", "server_metrics.parquet", "summary.json", "backend.log"}


@pytest.fixture
def setup(own_pg: PasswordPostgres, s3_url: str, tmp_path: Path) -> tuple[Deployment, Path, set[str]]:
    deployment = make_deployment(own_pg, s3_url, tmp_path)
    # cells of about 2 s each (real-time simulator), so the outage starts while most are still to run
    spec = write_spec(tmp_path / "outage.yaml", "e2e-outage", [sim("solo")], repetitions=REPETITIONS,
                      dataset="D(16,48)", compare={"metrics": ["ttft_ms.p50", "output_throughput"]})
    return deployment, spec, {c.id for c in load_spec(spec).cells()}


def _run_with_outage(d: Deployment, spec: Path, log: Path, *, restart_when_spooled: bool) -> tuple[int, int]:
    """Runs the campaign, stops Postgres once a cell is stored (and, if asked, starts it again once
    a cell was spooled). Returns (exit code, cells in the database when Postgres went down)."""
    proc = d.start_benchflow("run", str(spec), "--campaign-id", CID, log=log)
    try:
        wait_for(lambda: d.cells_stored(CID) >= 1, "the first stored cell", 60, proc, log)
        stored_before = d.cells_stored(CID)
        d.server.stop()
        if restart_when_spooled:
            wait_for(lambda: Spool(d.spool_dir).count(CID) >= 1, "a spooled cell", 30, proc, log)
            d.server.start()
        return proc.wait(timeout=90), stored_before
    finally:
        stop_process_group(proc, d.home)


def test_postgres_down_until_the_end_then_flush_loses_nothing(setup, tmp_path: Path):
    d, spec, cell_ids = setup
    log = tmp_path / "run.log"
    rc, stored_before = _run_with_outage(d, spec, log, restart_when_spooled=False)
    output = log.read_text()
    assert rc == 1, output
    assert len(re.findall(r"cell solo c2 rep \d: 6 ok", output)) == REPETITIONS  # every cell was measured
    assert stored_before < REPETITIONS
    # each cell that could not be stored says where it went; the end names the cause and the way out
    spooled = rf"WARNING .*cell [0-9a-f]+ could not be stored now; spooled to {re.escape(str(d.spool_dir))}/"
    assert re.search(spooled, output)
    assert "FAILED: campaign e2e-outage: measured, but its results could not be aggregated" in output
    assert "unreachable" in output and f"spool at {d.spool_dir}" in output
    assert "`benchflow flush`, then `benchflow report e2e-outage`" in output
    assert "Traceback" not in output
    assert f":{PASSWORD}@" in d.database_url and PASSWORD not in output
    spool = Spool(d.spool_dir)
    assert spool.count(CID) >= REPETITIONS - stored_before  # the missing cells, the backend log, the status
    assert PASSWORD.encode() not in spool_bytes(d.spool_dir)

    d.server.start()
    rc, flushed = d.benchflow("flush")
    assert rc == 0 and re.search(r"replayed (\d+) of \1 spooled entries", flushed), flushed
    _assert_every_cell_stored(d, cell_ids)
    assert d.read(lambda s: s.get_campaign(CID))["status"] == "failed"  # not analysed yet
    rc, report = d.benchflow("report", CID)
    assert rc == 0 and f"{REPETITIONS}/{REPETITIONS} cells completed" in report, report

    counts, objects = d.read(lambda s: s.row_counts()), d.objects(CID)
    rc, again = d.benchflow("flush")
    assert rc == 0 and "nothing to flush" in again
    assert d.read(lambda s: s.row_counts()) == counts and d.objects(CID) == objects

    # the way out the message names: the same campaign again measures nothing and analyses everything
    rc, rerun = d.benchflow("run", str(spec), "--campaign-id", CID)
    assert rc == 0, rerun
    assert f"{REPETITIONS} already completed, 0 to run" in rerun and "starting at http" not in rerun
    assert d.read(lambda s: s.get_campaign(CID))["status"] == "completed"
    assert {a["n"] for a in d.read(lambda s: s.aggregates(CID))} == {REPETITIONS}
    after = d.objects(CID)
    assert {k: after[k] for k in objects} == objects and {"manifest.json", "report.md"} <= set(after)


def test_cells_spooled_during_a_short_outage_are_in_the_aggregates(setup, tmp_path: Path):
    d, spec, cell_ids = setup
    log = tmp_path / "run.log"
    rc, _ = _run_with_outage(d, spec, log, restart_when_spooled=True)
    output = log.read_text()
    assert rc == 0, output
    assert "could not be stored now; spooled to" in output and re.search(r"replayed \d+ spooled writes into", output)
    _assert_every_cell_stored(d, cell_ids)
    assert Spool(d.spool_dir).count() == 0
    assert d.read(lambda s: s.get_campaign(CID))["status"] == "completed"
    # the spooled cells were replayed before the aggregation: every repetition counts
    assert {a["n"] for a in d.read(lambda s: s.aggregates(CID))} == {REPETITIONS}
    assert {"manifest.json", "report.md"} <= set(d.objects(CID))


def _assert_every_cell_stored(d: Deployment, cell_ids: set[str]) -> None:
    """Every measured cell: its row, its summary, its files in S3, and an artifact row for each file."""
    store = d.store()
    try:
        assert store.completed_cell_ids(CID) == cell_ids
        assert {s["cell_id"] for s in store.summaries(CID)} == cell_ids
        artifact_keys = {a["key"].removeprefix(f"campaigns/{CID}/") for a in store.artifacts(CID)}
    finally:
        store.dispose()
    objects = d.objects(CID)
    expected = {f"cells/{c}/{name}" for c in cell_ids for name in CELL_FILES} | {"backend-solo.log"}
    assert expected <= set(objects)
    assert set(objects) == artifact_keys  # every object is recorded, every record has its object
