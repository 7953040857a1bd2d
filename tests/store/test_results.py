"""Nothing measured is lost: retry, spool when storage is unreachable, flush later (real Postgres/S3)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from benchflow.errors import CampaignMismatchError
from benchflow.store import keys
from benchflow.store.artifacts import LocalArtifactStore
from benchflow.store.config import RetryPolicy
from benchflow.store.db import ResultStore
from benchflow.store.results import Results
from benchflow.store.s3 import S3ArtifactStore
from benchflow.store.spool import Spool
from tests.support import free_port
from tests.store import factories as f

FAST_RETRY = RetryPolicy(attempts=2, initial_delay_s=0.01, max_delay_s=0.01)


def _results(url: str, tmp_path: Path, artifacts=None, sleep=None) -> Results:
    store = ResultStore(url)
    store.upgrade()
    kwargs = {"sleep": sleep} if sleep else {}
    return Results(store, artifacts or LocalArtifactStore(tmp_path / "artifacts"), Spool(tmp_path / "spool"),
                   retry=FAST_RETRY, **kwargs)


def _start_campaign(results: Results, campaign_id: str = "camp-1") -> None:
    outcome = results.persist_campaign(campaign_id, name="nightly-sweep", spec=f.spec(), spec_hash="h1",
                                       backends=[f.backend("vllm-a"), f.backend("vllm-b", 128)])
    assert outcome.stored


def _persist(results: Results, i: int, campaign_id: str = "camp-1"):
    return results.persist_cell(campaign_id, f.cell(f"cell-{i}", repetition=i, position=i), f.summary(40.0 + i),
                                artifacts={keys.REQUESTS: f"requests of cell {i}".encode()})


def test_stored_cell_has_verified_artifacts_and_rows(tmp_path: Path):
    results = _results(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    _start_campaign(results)
    outcome = _persist(results, 0)
    assert outcome.status == "stored"
    (cell,) = results.store.cells("camp-1")
    assert set(cell["artifact_uris"]) == {keys.REQUESTS, keys.SUMMARY}
    stored = {a["key"]: a for a in results.store.artifacts("camp-1")}
    key = keys.cell_key("camp-1", "cell-0", keys.REQUESTS)
    assert stored[key]["sha256"] == hashlib.sha256(b"requests of cell 0").hexdigest()
    assert stored[key]["uri"] == cell["artifact_uris"][keys.REQUESTS]
    summary_json = json.loads(results.artifacts.get_bytes(keys.cell_key("camp-1", "cell-0", keys.SUMMARY)))
    assert summary_json["ttft_ms"]["p99"] == pytest.approx(100.0)
    assert len(results.store.backends("camp-1")) == 2


@pytest.mark.integration
def test_postgres_stopped_mid_campaign_then_flushed(pg_server, pg_url, tmp_path: Path, caplog):
    results = _results(pg_url, tmp_path)
    _start_campaign(results)
    assert _persist(results, 0).stored
    pg_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="benchflow.store.results"):
            outcomes = [_persist(results, i) for i in (1, 2)]
        assert [o.status for o in outcomes] == ["spooled", "spooled"]
        assert all(Path(o.where).parent == tmp_path / "spool" for o in outcomes)
        assert str(tmp_path / "spool") in caplog.text and "benchflow flush" in caplog.text
        assert results.flush().remaining == 2  # still down: nothing is deleted
    finally:
        pg_server.start()

    first = results.flush()
    assert (first.replayed, first.failed, first.remaining) == (2, 0, 0)
    assert results.store.completed_cell_ids("camp-1") == {"cell-0", "cell-1", "cell-2"}
    counts = results.store.row_counts()
    assert results.flush().replayed == 0
    for i in (1, 2):  # the run itself retrying the same cells: still no duplicates
        assert _persist(results, i).stored
    assert results.store.row_counts() == counts
    assert counts["cell_summaries"] == 3 and counts["artifacts"] == 6


@pytest.mark.integration
def test_a_short_outage_is_bridged_by_the_retry(pg_server, pg_url, tmp_path: Path):
    slept: list[float] = []

    def sleep_while_postgres_comes_back(seconds: float) -> None:
        slept.append(seconds)
        pg_server.start()

    results = _results(pg_url, tmp_path, sleep=sleep_while_postgres_comes_back)
    _start_campaign(results)
    pg_server.stop()
    try:
        outcome = _persist(results, 0)
    finally:
        if not pg_server.running():
            pg_server.start()
    assert outcome.stored and slept == [0.01]
    assert len(results.spool) == 0
    assert results.store.completed_cell_ids("camp-1") == {"cell-0"}


@pytest.mark.integration
def test_s3_unreachable_spools_then_flush_uploads(s3_endpoint, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    dead = S3ArtifactStore(s3_endpoint.bucket, "bench", endpoint_url=f"http://127.0.0.1:{free_port()}",
                           region_name="us-east-1")
    results = _results(url, tmp_path, artifacts=dead)
    _start_campaign(results)
    outcome = _persist(results, 0)
    assert outcome.status == "spooled" and "unreachable" in outcome.error
    assert results.store.cells("camp-1") == [] and results.store.artifacts("camp-1") == []

    live = S3ArtifactStore(s3_endpoint.bucket, "bench", endpoint_url=s3_endpoint.url)
    later = Results(results.store, live, Spool(tmp_path / "spool"), retry=FAST_RETRY)
    assert later.flush().replayed == 1
    key = keys.cell_key("camp-1", "cell-0", keys.REQUESTS)
    assert live.get_bytes(key) == b"requests of cell 0"
    (cell,) = later.store.cells("camp-1")
    assert cell["artifact_uris"][keys.REQUESTS] == f"s3://{s3_endpoint.bucket}/bench/{key}"
    assert {a["key"] for a in later.store.artifacts("camp-1")} == {key, keys.cell_key("camp-1", "cell-0", keys.SUMMARY)}


@pytest.mark.integration
def test_partial_artifact_is_never_recorded(s3_endpoint, tmp_path: Path):
    client = s3_endpoint.client()
    real_put = client.put_object

    def truncating_put(**kwargs):
        body = kwargs.pop("Body")
        data = body if isinstance(body, bytes) else body.read()
        for name in ("ContentMD5", "ChecksumSHA256", "ChecksumAlgorithm", "ContentLength"):
            kwargs.pop(name, None)
        return real_put(Body=data[: len(data) // 2], **kwargs)

    client.put_object = truncating_put
    flaky = S3ArtifactStore(s3_endpoint.bucket, "", endpoint_url=s3_endpoint.url, client=client)
    results = _results(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, artifacts=flaky)
    _start_campaign(results)
    outcome = _persist(results, 0)
    assert outcome.status == "spooled" and "failed verification" in outcome.error
    assert results.store.artifacts("camp-1") == [] and results.store.cells("camp-1") == []
    assert not flaky.exists(keys.cell_key("camp-1", "cell-0", keys.REQUESTS))


def test_damaged_spool_entry_is_kept_and_reported(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    dead = ResultStore(f"postgresql+psycopg://u@127.0.0.1:{free_port()}/x")
    spool = Spool(tmp_path / "spool")
    down = Results(dead, LocalArtifactStore(tmp_path / "artifacts"), spool, retry=FAST_RETRY)
    entry = down.persist_report("camp-1", "# report")
    assert entry.status == "spooled"
    (Path(entry.where) / "files" / "0").write_bytes(b"tampered")

    up = _results(url, tmp_path)
    _start_campaign(up)
    result = up.flush()
    assert (result.replayed, result.failed, result.remaining) == (0, 1, 1)
    assert up.store.artifacts("camp-1") == []  # a damaged file is never recorded as the artifact
    assert entry.where in {str(e.path) for e in spool.entries()}


def test_campaign_id_reuse_is_an_error_not_spooled(tmp_path: Path):
    results = _results(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    _start_campaign(results)
    with pytest.raises(CampaignMismatchError):
        results.persist_campaign("camp-1", name="nightly-sweep", spec=f.spec(), spec_hash="other")
    assert len(results.spool) == 0


def test_embedded_default_from_env(tmp_benchflow_home: Path):
    results = Results.from_env()
    assert results.upgrade() is True
    _start_campaign(results)
    assert _persist(results, 0).stored
    assert results.persist_manifest("camp-1", {"git_commit": "abc", "packages": {}}).stored
    assert results.persist_report("camp-1", "# done").stored
    assert results.finish_campaign("camp-1", "completed").stored
    assert (tmp_benchflow_home / "benchflow.db").is_file()
    assert (tmp_benchflow_home / "artifacts" / "campaigns" / "camp-1" / "report.md").read_text() == "# done"
    assert results.store.manifest("camp-1")["git_commit"] == "abc"
    assert results.store.get_campaign("camp-1")["status"] == "completed"
    assert results.flush().replayed == 0


def _spec():
    from benchflow.spec import load_spec

    return load_spec({
        "name": "ab-test", "model": "llama-8b", "labels": {"kind": "nightly", "team": "serving"},
        "allow_simulated": True,
        "backends": [{"name": "sim-a", "kind": "sim", "engine_args": {"max-num-seqs": 8}},
                     {"name": "vllm-b", "kind": "vllm", "engine_args": {"max-num-seqs": 64,
                                                                        "enable-chunked-prefill": True}}],
        "workload": {"dataset": "D(8,8)", "load_points": [{"concurrency": 2}], "max_requests": 10},
    })


def test_persist_campaign_from_a_campaign_spec(tmp_path: Path):
    results = _results(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    spec = _spec()
    outcome = results.persist_campaign("ab-1", spec, status="running", flow_run_id="run-42")
    assert outcome.stored and not outcome.spooled
    campaign = results.store.get_campaign("ab-1")
    assert (campaign["name"], campaign["kind"], campaign["flow_run_id"]) == ("ab-test", "nightly", "run-42")
    assert campaign["spec_hash"] == spec.content_hash() and campaign["labels"]["team"] == "serving"
    assert campaign["spec"]["model"]["name"] == "llama-8b"
    backends = {b["name"]: b for b in results.store.backends("ab-1")}
    assert backends["vllm-b"]["command"] == ["--max-num-seqs", "64", "--enable-chunked-prefill"]
    assert backends["vllm-b"]["image"] == "vllm/vllm-openai:latest" and backends["sim-a"]["image"] is None
    assert backends["sim-a"]["content_hash"] == spec.backend("sim-a").content_hash()
    assert results.persist_campaign("ab-1", spec, status="running").stored  # a resumed run: same rows
    assert results.store.row_counts()["backends"] == 2


def test_facade_helpers_for_the_flow(tmp_path: Path):
    results = _results(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    _start_campaign(results)
    assert results.persist_artifact("camp-1", "backend-vllm-a.log", b"ready\n").stored
    _persist(results, 0)
    checksums = results.artifact_checksums("camp-1")
    assert checksums["campaigns/camp-1/backend-vllm-a.log"] == hashlib.sha256(b"ready\n").hexdigest()
    assert len(checksums) == 3
    assert "database sqlite:///" in results.describe() and str(tmp_path / "artifacts") in results.describe()
    assert not results.flush()  # nothing to flush is falsy
    assert results.store.check_schema() == "0002"
