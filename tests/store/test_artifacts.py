"""The ArtifactStore contract, run against a local folder and a real S3 endpoint (moto over HTTP)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.errors import StorageError, StorageUnavailableError
from benchflow.store import keys
from benchflow.store.artifacts import (
    ArtifactNotFoundError,
    ArtifactStore,
    LocalArtifactStore,
)
from benchflow.store.artifact_factory import artifact_store_from_config
from benchflow.store.config import StoreConfig
from benchflow.store.s3 import S3ArtifactStore


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3ArtifactStore(endpoint.bucket, "bench/prod", endpoint_url=endpoint.url)


def test_put_get_roundtrip_with_verified_checksum(artifact_store: ArtifactStore, tmp_path: Path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    key = keys.cell_key("camp-1", "cell-0", keys.REQUESTS)
    ref = artifact_store.put_bytes(key, data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size_bytes == len(data)
    assert ref.uri == artifact_store.uri(key)
    assert artifact_store.get_bytes(key) == data
    assert artifact_store.exists(key)

    src = tmp_path / "backend.log"
    src.write_text("engine started\n" * 1000)
    log_key = keys.backend_log_key("camp-1", "vllm-a")
    file_ref = artifact_store.put_file(log_key, src)
    assert file_ref.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert artifact_store.get_bytes(log_key) == src.read_bytes()


def test_layout_and_listing_are_the_same_for_every_store(artifact_store: ArtifactStore):
    for name in keys.CELL_FILES:
        artifact_store.put_bytes(keys.cell_key("camp-1", "cell-0", name), name.encode())
    artifact_store.put_bytes(keys.campaign_key("camp-1", keys.MANIFEST), b"{}")
    artifact_store.put_bytes(keys.campaign_key("camp-2", keys.REPORT), b"# report")
    assert artifact_store.list("campaigns/camp-1/cells/cell-0") == sorted(
        f"campaigns/camp-1/cells/cell-0/{n}" for n in keys.CELL_FILES
    )
    assert "campaigns/camp-1/manifest.json" in artifact_store.list("campaigns/camp-1")
    assert artifact_store.list("campaigns/camp-9") == []
    assert len(artifact_store.list()) == len(keys.CELL_FILES) + 2


def test_overwrite_replaces_whole_object(artifact_store: ArtifactStore):
    key = keys.campaign_key("camp-1", keys.REPORT)
    artifact_store.put_bytes(key, b"x" * 1000)
    artifact_store.put_bytes(key, b"short")
    assert artifact_store.get_bytes(key) == b"short"


def test_missing_artifact(artifact_store: ArtifactStore):
    key = keys.campaign_key("camp-1", keys.REPORT)
    assert not artifact_store.exists(key)
    with pytest.raises(ArtifactNotFoundError):
        artifact_store.get_bytes(key)


@pytest.mark.parametrize("bad", ["../../x", "..", "a/b", "/abs", "", ".hidden", "a..b", "x" * 129, "sp ace"])
def test_ids_that_could_escape_the_prefix_are_rejected(bad: str):
    with pytest.raises(ValueError, match="not a valid id"):
        keys.cell_key(bad, "cell-0", keys.SUMMARY)
    with pytest.raises(ValueError, match="not a valid id"):
        keys.cell_key("camp-1", bad, keys.SUMMARY)
    with pytest.raises(ValueError, match="not a valid id"):
        keys.backend_log_key("camp-1", bad)


@pytest.mark.parametrize("bad", ["../x", "campaigns/../../etc/passwd", "/etc/passwd", "campaigns//x", "",
                                 "campaigns/./x", "campaigns/x/"])
def test_stores_refuse_raw_keys_that_could_escape(artifact_store: ArtifactStore, bad: str, tmp_path: Path):
    with pytest.raises(ValueError):
        artifact_store.put_bytes(bad, b"x")
    with pytest.raises(ValueError):
        artifact_store.get_bytes(bad)
    assert not (tmp_path / "etc").exists()


def test_rejected_id_is_a_spec_error_with_a_clear_message():
    from benchflow.errors import SpecError

    with pytest.raises(SpecError) as err:
        keys.campaign_key("../../etc", keys.MANIFEST)
    assert str(err.value).startswith("campaign_id: '../../etc' is not a valid id")


@settings(max_examples=200, deadline=None)
@given(campaign_id=st.text(min_size=0, max_size=40), cell_id=st.text(min_size=0, max_size=40))
def test_any_accepted_key_stays_inside_the_prefix(campaign_id: str, cell_id: str):
    root = Path("/srv/artifacts")
    try:
        key = keys.cell_key(campaign_id, cell_id, keys.SUMMARY)
    except ValueError:
        return
    resolved = (root / key).resolve()
    assert resolved.is_relative_to(root / "campaigns")
    assert key.count("/") == 4


def test_local_write_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = LocalArtifactStore(tmp_path / "artifacts")
    key = keys.cell_key("camp-1", "cell-0", keys.REQUESTS)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError, match="No space left"):
        store.put_bytes(key, b"x" * 10_000)
    assert not store.exists(key)
    assert list((tmp_path / "artifacts").rglob("*.parquet")) == []
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []  # no temp file left


@pytest.mark.integration
def test_s3_partial_upload_is_detected_and_deleted(s3_endpoint):
    """An upload that stored fewer bytes than sent is not reported as stored, and is removed."""
    client = s3_endpoint.client()
    real_put = client.put_object

    def truncating_put(**kwargs):  # what a proxy cutting the body short would leave behind
        body = kwargs.pop("Body")
        data = body if isinstance(body, bytes) else body.read()
        half = data[: len(data) // 2]
        for name in ("ContentMD5", "ChecksumSHA256", "ContentLength"):
            kwargs.pop(name, None)
        return real_put(Body=half, **kwargs)

    client.put_object = truncating_put
    store = S3ArtifactStore(s3_endpoint.bucket, "p", endpoint_url=s3_endpoint.url, client=client)
    key = keys.cell_key("camp-1", "cell-0", keys.REQUESTS)
    with pytest.raises(StorageError, match="failed verification"):
        store.put_bytes(key, b"y" * 4096)
    assert not store.exists(key)


@pytest.mark.integration
def test_s3_corrupted_upload_is_detected_even_if_checksum_headers_claim_otherwise(s3_endpoint):
    """A body altered in transit, sent with the original's checksum headers, is caught by head_object."""
    client = s3_endpoint.client()
    real_put = client.put_object

    def corrupting_put(**kwargs):
        data = kwargs.pop("Body")
        data = data if isinstance(data, bytes) else data.read()
        return real_put(Body=bytes([data[0] ^ 0xFF]) + data[1:], **kwargs)

    client.put_object = corrupting_put
    store = S3ArtifactStore(s3_endpoint.bucket, "", endpoint_url=s3_endpoint.url, client=client)
    key = keys.cell_key("camp-1", "cell-0", keys.GPU)
    with pytest.raises(StorageError, match="failed verification"):
        store.put_bytes(key, b"gpu samples" * 100)
    assert not store.exists(key)


@pytest.mark.integration
def test_s3_unreachable_is_transient(monkeypatch: pytest.MonkeyPatch):
    from tests.support import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3ArtifactStore("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="us-east-1")
    with pytest.raises(StorageUnavailableError, match="unreachable"):
        store.put_bytes(keys.campaign_key("camp-1", keys.REPORT), b"x")


def test_store_is_chosen_by_config(tmp_path: Path):
    local = artifact_store_from_config(StoreConfig.from_env({"BENCHFLOW_HOME": str(tmp_path)}))
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "artifacts"
    s3 = artifact_store_from_config(StoreConfig.from_env(
        {"BENCHFLOW_HOME": str(tmp_path), "BENCHFLOW_ARTIFACTS": "s3://results/bench/v1",
         "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "us-east-1"}))
    assert isinstance(s3, S3ArtifactStore)
    assert s3.uri(keys.campaign_key("c", keys.REPORT)) == "s3://results/bench/v1/campaigns/c/report.md"
    assert s3.endpoint_url == "http://127.0.0.1:9000"
