"""Root fixtures shared by every test area."""

from __future__ import annotations

import os

import pytest

# No telemetry from the throwaway Prefect servers the tests start.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


from tests.support import free_port  # noqa: E402,F401  (kept for old importers; use tests.support)


@pytest.fixture
def tmp_benchflow_home(tmp_path, monkeypatch):
    """Points the embedded default (SQLite + local artifacts) at a temporary folder."""
    home = tmp_path / "benchflow-home"
    monkeypatch.setenv("BENCHFLOW_HOME", str(home))
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    return home
