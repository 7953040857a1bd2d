"""Root fixtures shared by every test area."""

from __future__ import annotations

import os

import pytest

# ``from tests.conftest import free_port`` keeps working; new code imports it from tests.support.
from tests.support.helpers import free_port, prefect_test_env  # noqa: F401

# For every throwaway Prefect server a test starts, in this process or in a subprocess that inherits
# the environment (`benchflow run` without PREFECT_API_URL): no telemetry, and a start-up limit that
# holds on a loaded 2-core machine (Prefect's default of 20 s does not). A value set outside wins.
for _name, _value in prefect_test_env().items():
    os.environ.setdefault(_name, _value)


@pytest.fixture
def tmp_benchflow_home(tmp_path, monkeypatch):
    """Points the embedded default (SQLite + local artifacts) at a temporary folder."""
    home = tmp_path / "benchflow-home"
    monkeypatch.setenv("BENCHFLOW_HOME", str(home))
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    return home
