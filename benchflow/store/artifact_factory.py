"""Builds the artifact store named by the configuration (kept apart from both store modules so that
``artifacts.py`` and ``s3.py`` do not import each other)."""

from __future__ import annotations

from benchflow.errors import StorageError
from benchflow.store.artifacts import ArtifactStore, LocalArtifactStore
from benchflow.store.config import StoreConfig
from benchflow.store.keys import validate_prefix
from benchflow.store.s3 import S3ArtifactStore


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise StorageError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {url!r}")
    return bucket, validate_prefix(prefix)


def artifact_store_from_config(cfg: StoreConfig) -> ArtifactStore:
    """The store named by ``BENCHFLOW_ARTIFACTS``: a local folder or ``s3://bucket/prefix``."""
    if cfg.artifacts_are_s3:
        bucket, prefix = parse_s3_url(cfg.artifacts)
        return S3ArtifactStore(bucket, prefix, endpoint_url=cfg.s3_endpoint_url)
    return LocalArtifactStore(cfg.artifacts)
