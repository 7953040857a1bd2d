"""Postgres tests skip without the server binaries on a developer machine, and FAIL in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = '''
def test_needs_postgres(pg_server):
    assert pg_server.port
'''


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    probe = tmp_path / "store_probe"
    probe.mkdir(exist_ok=True)
    (probe / "conftest.py").write_text("from tests.store.conftest import pg_server  # noqa: F401\n")
    (probe / "test_probe.py").write_text(PROBE)
    full = {**{k: v for k, v in os.environ.items() if k != "CI"}, "PYTHONPATH": str(REPO),
            "BENCHFLOW_PG_BIN": str(tmp_path / "no-postgres-here"), **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
                          cwd=REPO, env=full, capture_output=True, text=True, timeout=120)


def test_missing_postgres_skips_on_a_developer_machine(tmp_path):
    proc = _pytest(tmp_path)
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout + proc.stderr
    assert "PostgreSQL server binaries not found" in proc.stdout


def test_missing_postgres_fails_in_ci(tmp_path):
    proc = _pytest(tmp_path, CI="true")
    assert proc.returncode == 1 and "1 error" in proc.stdout, proc.stdout + proc.stderr
    assert "Postgres tests do not skip in CI" in proc.stdout
