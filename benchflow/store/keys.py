"""Artifact keys, built from ids ONLY here, so that no id can escape the store's prefix.

Layout (identical for the local folder and S3, under the store's prefix)::

    campaigns/<campaign_id>/manifest.json
    campaigns/<campaign_id>/report.md
    campaigns/<campaign_id>/backend-<backend_name>.log
    campaigns/<campaign_id>/cells/<cell_id>/{requests.parquet, server_metrics.parquet,
                                             gpu.parquet, summary.json, backend.log}
"""

from __future__ import annotations

import re

from benchflow.errors import SpecError

#: An id or file name: a letter or digit first, then letters, digits, ".", "_" or "-"; at most 128.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

REQUESTS = "requests.parquet"
SERVER_METRICS = "server_metrics.parquet"
GPU = "gpu.parquet"
SUMMARY = "summary.json"
BACKEND_LOG = "backend.log"
MANIFEST = "manifest.json"
REPORT = "report.md"

#: The files a cell folder normally holds.
CELL_FILES = (REQUESTS, SERVER_METRICS, GPU, SUMMARY, BACKEND_LOG)


class InvalidIdError(SpecError, ValueError):
    """An id (campaign, cell, backend, file name) that cannot be used in an artifact key."""

    def __init__(self, problem: str):
        super().__init__([problem])
        Exception.__init__(self, problem)  # one clear line, not "invalid spec:"


def validate_id(value: object, what: str = "id") -> str:
    """Returns ``value`` when it is a safe single path segment, else raises :class:`InvalidIdError`."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidIdError(
            f"{what}: {value!r} is not a valid id (1-128 of A-Z a-z 0-9 . _ -, starting with a "
            "letter or digit, no '..' and no '/')"
        )
    return value


#: A campaign id: the id rule above, lower case only (ids become folder names, and folders on
#: case-insensitive file systems must not collide). The ONE rule, used by the CLI, the flows and the store.
CAMPAIGN_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def validate_campaign_id(value: object) -> str:
    """Returns ``value`` when it is a valid campaign id, else raises :class:`InvalidIdError`
    (a ``ValueError``)."""
    if not isinstance(value, str) or not CAMPAIGN_ID_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidIdError(
            f"campaign_id: {value!r} is not a valid id (invalid campaign id: use 1-128 of lowercase "
            "a-z 0-9 . _ -, starting with a letter or digit, no '..' and no '/')"
        )
    return value


def validate_key(key: str) -> str:
    """Checks a whole relative key (``a/b/c``): every segment must be a valid id."""
    if not isinstance(key, str) or not key or key.startswith("/"):
        raise InvalidIdError(f"artifact key: {key!r} must be a non-empty relative key")
    for segment in key.split("/"):
        validate_id(segment, f"artifact key {key!r} segment")
    return key


def validate_prefix(prefix: str) -> str:
    """A store prefix: empty, or valid segments joined by "/" (surrounding slashes are dropped)."""
    prefix = prefix.strip("/")
    return validate_key(prefix) if prefix else ""


def campaign_prefix(campaign_id: str) -> str:
    return f"campaigns/{validate_campaign_id(campaign_id)}"


def campaign_key(campaign_id: str, name: str) -> str:
    """A campaign-level file: ``manifest.json``, ``report.md``, plots."""
    return f"{campaign_prefix(campaign_id)}/{validate_id(name, 'file name')}"


def backend_log_key(campaign_id: str, backend_name: str) -> str:
    return campaign_key(campaign_id, f"backend-{validate_id(backend_name, 'backend name')}.log")


def cell_prefix(campaign_id: str, cell_id: str) -> str:
    return f"{campaign_prefix(campaign_id)}/cells/{validate_id(cell_id, 'cell_id')}"


def cell_key(campaign_id: str, cell_id: str, name: str) -> str:
    """A file of one cell: ``requests.parquet``, ``summary.json``, ..."""
    return f"{cell_prefix(campaign_id, cell_id)}/{validate_id(name, 'file name')}"
