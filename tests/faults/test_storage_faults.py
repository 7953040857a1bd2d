"""The object store goes down in the middle of ``benchflow run``, then comes back and is flushed.

A real S3 endpoint (moto in server mode on 127.0.0.1) holds the artifacts, SQLite the rows. Once
the first cell is stored the endpoint is stopped (connections are refused, the "down" case; a
frozen endpoint is the storage-hang fault, tested by its fix). The cells measured meanwhile must be
spooled with a warning naming the spool folder; after the endpoint is back, ``benchflow flush``
must store every one of them, rows and objects, so nothing measured is lost.

(Postgres down, then flushed: tests/e2e/test_postgres_outage.py.)
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchflow.spec import load_spec
from tests.faults.conftest import Home, free_port, sim_backend, stop_tree, wait_for, write_spec

pytestmark = pytest.mark.integration

CID = "faults-s3-down"
REPETITIONS = 5
CELL_FILES = {"requests.parquet", "summary.json"}
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3:
    """A moto S3 endpoint that can be stopped and started again on the same port (its buckets and
    objects live in this process, so they survive the restart, as a real store's would)."""

    port: int
    server: object | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self):  # noqa: ANN201 - a boto3 client
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, bucket: str, prefix: str) -> set[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"].removeprefix(prefix) for page in pages for o in page.get("Contents", [])}


@pytest.fixture
def s3() -> Iterator[S3]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    endpoint = S3(port=free_port())
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def test_s3_down_mid_campaign_spools_and_flush_loses_nothing(s3: S3, home: Home, tmp_path: Path):
    bucket = f"bf-faults-{random.randrange(16**8):08x}"
    s3.client().create_bucket(Bucket=bucket)
    home.extra_env.update(AWS, BENCHFLOW_ARTIFACTS=f"s3://{bucket}/bench", AWS_ENDPOINT_URL=s3.url,
                          BENCHFLOW_STORE_RETRY_ATTEMPTS="2", BENCHFLOW_STORE_RETRY_DELAY_S="0.2")
    # real-time simulator cells of about a second or two, so most are still to run when S3 goes down
    spec = write_spec(tmp_path / "s3.yaml", [{**sim_backend("solo"), "engine_args": {"time-scale": 1.0}}],
                      name="faults-s3", repetitions=REPETITIONS, max_requests=6, dataset="D(16,48)")
    cell_ids = {c.id for c in load_spec(spec).cells()}
    log = tmp_path / "run.log"
    proc = home.start("run", str(spec), "--campaign-id", CID, log=log)
    try:
        completed = lambda: [c for c in home.cells(CID) if c["status"] == "completed"]  # noqa: E731
        wait_for(completed, "first stored cell", timeout_s=240, proc=proc)
        stored_before = len(completed())
        s3.stop()
        rc = proc.wait(timeout=240)
    finally:
        stop_tree(proc)
    output = log.read_text()
    assert stored_before < REPETITIONS, "the outage began before the last cell"
    assert "Traceback" not in output, output[-3000:]
    spool = home.path / "spool"
    assert re.search(rf"cell [0-9a-f]+ could not be stored now; spooled to {re.escape(str(spool))}", output), \
        output[-3000:]
    assert len(re.findall(r"cell solo c2 rep \d: 6 ok", output)) == REPETITIONS, "every cell was measured"
    # the run ends failed, says nothing is lost, and names the way out
    assert rc == 1, output[-3000:]
    assert "measured, but its results could not be aggregated" in output and "S3 endpoint unreachable" in output
    assert "Nothing is lost" in output and f"spool at {spool}" in output
    assert f"run `benchflow flush`, then `benchflow report {CID}`" in output
    assert home.campaign(CID)["status"] == "failed"

    s3.start()
    rc_flush, flushed = home.benchflow("flush")
    assert rc_flush == 0 and "Traceback" not in flushed, flushed
    assert re.search(r"replayed (\d+) of \1 spooled entries", flushed), flushed
    left = [p for p in spool.rglob("*") if p.is_file() and not p.name.startswith(".")]  # .flush.lock stays
    assert not left, "the spool is empty after the flush"

    cells = home.cells(CID)
    assert {c["cell_id"] for c in cells if c["status"] == "completed"} == cell_ids, "every measured cell is stored"
    assert {s["cell_id"] for s in home.summaries(CID)} == cell_ids
    objects = s3.keys(bucket, f"bench/campaigns/{CID}/")
    assert {f"cells/{c}/{name}" for c in cell_ids for name in CELL_FILES} <= objects, "every cell's files are in S3"
    recorded = {r["key"].removeprefix(f"campaigns/{CID}/")
                for r in home.rows("SELECT key FROM artifacts WHERE campaign_id = ?", CID)}
    assert recorded <= objects, "every recorded artifact has its object"

    rc_report, report = home.benchflow("report", CID)
    assert rc_report == 0 and f"{REPETITIONS}/{REPETITIONS} cells completed" in report, report

    # the same campaign again measures nothing and analyses everything
    rc_again, again = home.benchflow("run", str(spec), "--campaign-id", CID)
    assert rc_again == 0, again[-3000:]
    assert f"{REPETITIONS} already completed, 0 to run" in again
    assert home.campaign(CID)["status"] == "completed"
    assert {r["n"] for r in home.rows("SELECT n FROM aggregates WHERE campaign_id = ?", CID)} == {REPETITIONS}
