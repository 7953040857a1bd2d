"""Where results live: the results database, the artifact store and the spool.

- :class:`Results` (``results.py``): the facade a flow uses; nothing measured is ever lost.
- :class:`ResultStore` (``db.py``): rows in SQLite or Postgres, schema by Alembic (``sql/migrations``).
- :class:`LocalArtifactStore` / :class:`S3ArtifactStore`: raw data, logs, reports, verified writes.
- :class:`Spool`: pending writes on local disk, replayed by :meth:`Results.flush`.
- :class:`StoreConfig`: settings from ``BENCHFLOW_*`` environment variables.
"""

from benchflow.store.artifacts import (
    ArtifactNotFoundError,
    ArtifactRef,
    ArtifactStore,
    LocalArtifactStore,
)
from benchflow.store.artifact_factory import artifact_store_from_config
from benchflow.store.config import RetryPolicy, StoreConfig, normalize_database_url, redact_url
from benchflow.store.db import ResultStore
from benchflow.store.keys import InvalidIdError, backend_log_key, campaign_key, cell_key, validate_id
from benchflow.store.manifest import build_manifest
from benchflow.store.results import FlushResult, PersistOutcome, Results
from benchflow.store.s3 import S3ArtifactStore
from benchflow.store.spool import Spool

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactRef",
    "ArtifactStore",
    "FlushResult",
    "InvalidIdError",
    "LocalArtifactStore",
    "PersistOutcome",
    "ResultStore",
    "Results",
    "RetryPolicy",
    "S3ArtifactStore",
    "Spool",
    "StoreConfig",
    "artifact_store_from_config",
    "backend_log_key",
    "build_manifest",
    "campaign_key",
    "cell_key",
    "normalize_database_url",
    "redact_url",
    "validate_id",
]
