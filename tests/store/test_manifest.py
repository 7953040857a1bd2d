"""The run manifest records code, machine and package versions, and is stored with the campaign."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

from benchflow.store.manifest import build_manifest
from tests.store import factories as f


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=30)


def test_manifest_records_git_state_packages_and_driver(tmp_path: Path):
    repo = tmp_path / "code"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("1")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-m", "init")

    clean = build_manifest(code_path=repo, health_report=f.health_report(), artifacts={"k": "sha"})
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    assert clean["driver_version"] == "550.54.15" and clean["cuda_version"] == "12.4"
    assert clean["python_version"] == platform.python_version()
    assert {"benchflow", "sqlalchemy", "pandas"} <= set(clean["packages"])
    assert clean["artifacts"] == {"k": "sha"}
    json.dumps(clean)  # JSON-ready

    (repo / "a.txt").write_text("2")
    assert build_manifest(code_path=repo)["git_dirty"] is True


def test_manifest_without_git_or_gpu(tmp_path: Path):
    manifest = build_manifest(code_path=tmp_path)
    assert manifest["git_commit"] is None and manifest["git_dirty"] is None
    assert manifest["driver_version"] is None and manifest["benchflow_version"]
