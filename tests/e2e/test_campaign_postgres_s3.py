"""Issue 5 end to end: ``benchflow run`` with BENCHFLOW_DATABASE_URL (Postgres) and
BENCHFLOW_ARTIFACTS (S3) stores the whole campaign there, ``benchflow report`` reads it back, a
rerun duplicates nothing, and a Postgres outage in the middle of a campaign loses nothing."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from benchflow.spec import load_spec
from benchflow.store import migrations
from tests.support import free_port
from tests.e2e.conftest import (
    PASSWORD,
    Deployment,
    make_deployment,
    sim,
    write_spec,
)

pytestmark = pytest.mark.integration

CID = "e2e-pg-s3"
CELL_FILES = {"requests.parquet", "server_metrics.parquet", "summary.json", "backend.log"}
TABLES = {"campaigns", "backends", "cells", "cell_summaries", "aggregates", "comparisons", "run_manifests",
          "artifacts"}


def _expected_objects(cell_ids: set[str], backends: list[str], *, finished: bool = True) -> set[str]:
    keys = {f"cells/{c}/{name}" for c in cell_ids for name in CELL_FILES} | {f"backend-{b}.log" for b in backends}
    return keys | ({"manifest.json", "report.md"} if finished else set())


class Stored:
    """One campaign run once on Postgres + S3 (shared by this module's tests)."""

    def __init__(self, deployment: Deployment, spec: Path, rc: int, output: str):
        self.deployment, self.spec, self.rc, self.output = deployment, spec, rc, output
        self.cell_ids = {c.id for c in load_spec(spec).cells()}


@pytest.fixture(scope="module")
def stored(secure_pg, s3_url, tmp_path_factory) -> Stored:
    base = tmp_path_factory.mktemp("stored")
    deployment = make_deployment(secure_pg, s3_url, base)
    spec = write_spec(base / "ab.yaml", "e2e-ab", [sim("small", **{"max-num-seqs": 1, "time-scale": 0.1}),
                                                   sim("large", **{"max-num-seqs": 8, "time-scale": 0.1})],
                      repetitions=3, compare={"baseline": "small", "metrics": ["ttft_ms.p50", "output_throughput"]})
    rc, output = deployment.benchflow("run", str(spec), "--campaign-id", CID)
    return Stored(deployment, spec, rc, output)


def test_the_whole_campaign_is_in_postgres_and_s3(stored: Stored):
    d = stored.deployment
    assert stored.rc == 0, stored.output
    assert "6 cells, 0 already completed, 6 to run" in stored.output
    assert "results in database postgresql+psycopg://postgres:***@127.0.0.1" in stored.output
    assert f"S3ArtifactStore('{d.bucket}', '{d.prefix}'" in stored.output
    store = d.store()
    try:
        assert store.current_revision() == migrations.head_revision()  # the flow migrated the empty database
        campaign = store.get_campaign(CID)
        assert campaign["status"] == "completed" and campaign["name"] == "e2e-ab"
        assert campaign["spec_hash"] == load_spec(stored.spec).content_hash()
        assert {b["name"] for b in store.backends(CID)} == {"small", "large"}
        cells = store.cells(CID)
        assert {c["cell_id"] for c in cells} == stored.cell_ids and {c["status"] for c in cells} == {"completed"}
        summaries = {s["cell_id"]: s["summary"] for s in store.summaries(CID)}
        assert set(summaries) == stored.cell_ids and all(s["completed"] == 6 for s in summaries.values())
        aggregates = store.aggregates(CID)
        assert {(a["backend_name"], a["metric"], a["n"]) for a in aggregates} == {
            (b, m, 3) for b in ("small", "large") for m in ("ttft_ms.p50", "output_throughput")}
        comparisons = store.comparisons(CID)
        assert {(c["baseline_ref"], c["candidate_ref"], c["metric"]) for c in comparisons} == {
            ("small", "large", "ttft_ms.p50"), ("small", "large", "output_throughput")}
        assert all(c["verdict"] for c in comparisons)
        manifest = store.manifest(CID)
        artifact_rows = {a["key"]: a for a in store.artifacts(CID)}
    finally:
        store.dispose()

    objects = d.objects(CID)
    charts = {k for k in objects if k.startswith("charts/")}
    assert {"charts/latency-throughput.svg"} <= charts, "the campaign's charts are stored in S3 too"
    assert set(objects) - charts == _expected_objects(stored.cell_ids, ["small", "large"])
    root = f"s3://{d.bucket}/{d.prefix}/campaigns/{CID}/"
    assert {k.removeprefix(f"campaigns/{CID}/") for k in artifact_rows} == set(objects)
    assert all(a["uri"] == root + a["key"].removeprefix(f"campaigns/{CID}/") for a in artifact_rows.values())
    assert all(objects[k.removeprefix(f"campaigns/{CID}/")][1] == a["size_bytes"] for k, a in artifact_rows.items())
    # the manifest names (and checksums) every other artifact; the S3 copy is the row's manifest
    assert set(manifest["artifacts"]) == set(artifact_rows) - {f"campaigns/{CID}/manifest.json"}
    assert json.loads(d.object_bytes(CID, "manifest.json")) == json.loads(json.dumps(manifest["manifest"]))
    cell = sorted(stored.cell_ids)[0]
    assert json.loads(d.object_bytes(CID, f"cells/{cell}/summary.json"))["completed"] == summaries[cell]["completed"]
    assert "## Comparisons" in d.object_bytes(CID, "report.md").decode()


def test_report_reads_the_campaign_back_from_postgres(stored: Stored):
    rc, output = stored.deployment.benchflow("report", CID)
    assert rc == 0, output
    assert f"campaign {CID} (e2e-ab): completed — 6/6 cells completed" in output
    assert re.search(r"c2\s+small\s+3\s", output), output  # rows grouped by load point: load, backend, reps
    assert "postgresql+psycopg://postgres:***@127.0.0.1" in output
    rc, markdown = stored.deployment.benchflow("report", CID, "--markdown")
    assert rc == 0 and f"# Campaign `{CID}`" in markdown and "| small" in markdown


def test_a_rerun_with_the_same_campaign_id_duplicates_nothing(stored: Stored):
    d = stored.deployment
    counts_before = d.read(lambda s: s.row_counts())
    objects_before = d.objects(CID)
    rc, output = d.benchflow("run", str(stored.spec), "--campaign-id", CID)
    assert rc == 0, output
    assert "6 cells, 6 already completed, 0 to run" in output
    assert "starting at http" not in output  # no backend deployed, nothing measured
    assert d.read(lambda s: s.row_counts()) == counts_before
    objects_after = d.objects(CID)
    assert set(objects_after) == set(objects_before)
    cell_objects = [k for k in objects_before if k.startswith("cells/")]
    assert {k: objects_after[k] for k in cell_objects} == {k: objects_before[k] for k in cell_objects}


def test_a_different_spec_under_the_same_id_is_refused_naming_the_difference(stored: Stored, tmp_path: Path):
    d = stored.deployment
    changed = write_spec(tmp_path / "ab.yaml", "e2e-ab", [sim("small", **{"max-num-seqs": 1, "time-scale": 0.1}),
                                                          sim("large", **{"max-num-seqs": 16, "time-scale": 0.1})],
                         repetitions=3, compare={"baseline": "small", "metrics": ["ttft_ms.p50", "output_throughput"]})
    counts_before = d.read(lambda s: s.row_counts())
    rc, output = d.benchflow("run", str(changed), "--campaign-id", CID)
    assert rc == 1
    assert "refusing to resume" in output and "max-num-seqs: 8 -> 16" in output, output
    assert "starting at http" not in output
    assert d.read(lambda s: s.row_counts()) == counts_before
    assert d.read(lambda s: s.get_campaign(CID))["spec_hash"] == load_spec(stored.spec).content_hash()


def test_the_password_is_in_no_output_row_or_object(stored: Stored):
    d = stored.deployment
    assert f":{PASSWORD}@" in d.env()["BENCHFLOW_DATABASE_URL"]  # the runs had it, and needed it (scram)
    assert len(d.outputs) >= 1 and "postgres:***@" in d.outputs[0]
    for output in d.outputs:
        assert PASSWORD not in output
    assert PASSWORD not in d.dump_tables()
    for key in d.objects(CID):
        assert PASSWORD.encode() not in d.object_bytes(CID, key), key
    prefect_files = [p for p in (d.home / "prefect").rglob("*") if p.is_file()]
    assert prefect_files, "the flow ran on an ephemeral Prefect server under PREFECT_HOME"
    for path in prefect_files:  # flow run logs and parameters live in the Prefect server's database
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_db_upgrade_on_a_fresh_postgres(deployment: Deployment):
    rc, output = deployment.benchflow("db", "current")
    assert rc == 1 and "none (empty database)" in output
    rc, output = deployment.benchflow("db", "upgrade")
    assert rc == 0 and f"upgraded to revision {migrations.head_revision()}" in output, output
    assert TABLES <= set(deployment.read(lambda s: s.row_counts()))
    rc, output = deployment.benchflow("db", "upgrade")
    assert rc == 0 and "already at revision" in output
    rc, output = deployment.benchflow("db", "current")
    assert rc == 0 and "(head)" in output
    assert all(PASSWORD not in o for o in deployment.outputs)


def test_a_campaign_does_not_start_without_its_database(deployment: Deployment, tmp_path: Path):
    down = dataclasses.replace(deployment, url_override=deployment.server.url(deployment.dbname).replace(
        f":{deployment.server.port}/", f":{free_port()}/"))
    spec = write_spec(tmp_path / "one.yaml", "e2e-down", [sim("a", **{"time-scale": 0.1})], repetitions=1)
    rc, output = down.benchflow("run", str(spec), "--campaign-id", "e2e-down")
    assert rc == 1
    assert "campaign e2e-down not started, nothing was measured" in output and "unreachable" in output, output
    assert "starting at http" not in output and "Traceback" not in output and PASSWORD not in output
