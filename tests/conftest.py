"""Root fixtures shared by every test area."""

from __future__ import annotations

import os
import socket

import pytest

# No telemetry from the throwaway Prefect servers the tests start.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tmp_benchflow_home(tmp_path, monkeypatch):
    """Points the embedded default (SQLite + local artifacts) at a temporary folder."""
    home = tmp_path / "benchflow-home"
    monkeypatch.setenv("BENCHFLOW_HOME", str(home))
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    return home
