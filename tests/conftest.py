"""Root fixtures shared by every test area."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# ``from tests.conftest import free_port`` keeps working; new code imports it from tests.support.
from tests.support.helpers import PREFECT_STARTUP_TIMEOUT_S, free_port, prefect_test_env  # noqa: F401

# For every throwaway Prefect server a test starts, in this process or in a subprocess that inherits
# the environment (`benchflow run` without PREFECT_API_URL): no telemetry, and a start-up limit that
# holds on a loaded 2-core machine (Prefect's default of 20 s does not). A value set outside wins.
for _name, _value in prefect_test_env().items():
    os.environ.setdefault(_name, _value)

# Never the user's Prefect: a Prefect home of this session's own (its profiles, its ephemeral server's
# SQLite database), so that a second `make test` beside this one, or a pytest-xdist worker, does not
# share the database file, and no profile or exported PREFECT_API_URL sends test flows to a real server.
# Tests that need a server set PREFECT_API_URL themselves (the harness, tests/deploy).
_PREFECT_HOME = tempfile.mkdtemp(prefix="benchflow-tests-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
for _name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One throwaway Prefect server (SQLite) for the whole session, with a start-up limit that holds
    under load and cache records in a temporary folder. Flows run in this process use it."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-storage")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_TIMEOUT_S):
            yield


@pytest.fixture
def tmp_benchflow_home(tmp_path, monkeypatch):
    """Points the embedded default (SQLite + local artifacts) at a temporary folder."""
    home = tmp_path / "benchflow-home"
    monkeypatch.setenv("BENCHFLOW_HOME", str(home))
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    return home


# pytest-xdist (`make test-fast`: -n 2 --dist loadgroup): the areas whose session fixtures are
# expensive or machine-wide run on one worker each, so each starts its fixtures once and no two
# workers build the same Docker image or start a Postgres/Prefect stack each. Without pytest-xdist
# installed the marks are not added.
XDIST_GROUPS = {
    "docker": "docker",        # one Docker engine; sim_image builds benchflow/sim:latest
    "deploy": "deploy",        # prefect_stack: Postgres + Prefect server + worker per session
    "flows": "prefect",        # prefect_harness: one throwaway Prefect server per session
    "e2e": "e2e",              # secure_pg: a password Postgres per session
    "store": "postgres",       # pg_server: a Postgres per session
}


def xdist_group_of(relpath: str) -> str | None:
    """The xdist group of a test file, from its area (``tests/<area>/...``); None: any worker."""
    parts = relpath.replace("\\", "/").split("/")
    return XDIST_GROUPS.get(parts[1]) if len(parts) > 2 and parts[0] == "tests" else None


def pytest_itemcollected(item):
    # during collection, so the mark is there when xdist's worker turns it into the group suffix
    if not item.config.pluginmanager.hasplugin("xdist"):  # the mark is xdist's (harmless when not distributing)
        return
    group = xdist_group_of(os.path.relpath(str(item.path), str(item.config.rootpath)))
    if group is not None:
        item.add_marker(pytest.mark.xdist_group(group))
