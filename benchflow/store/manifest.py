"""The run manifest: what code, on what machine, with which packages produced a campaign's results."""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from benchflow import SCHEMA_VERSION, __version__
from benchflow.store.rows import json_safe, utcnow

log = logging.getLogger(__name__)

#: Distributions whose versions matter for comparing results.
PACKAGES = (
    "benchflow", "prefect", "prefect-docker", "vllm", "sglang", "torch", "transformers", "pandas", "pyarrow",
    "numpy", "scipy", "sqlalchemy", "alembic", "psycopg", "boto3", "aiohttp", "pydantic", "optuna",
    "nvidia-ml-py",
)
_GIT_TIMEOUT_S = 10
FAKE_NVML_ENV = "BENCHFLOW_FAKE_NVML"
FAKE_NVML_WARNING = ("WARNING: GPU values (energy, power, driver version) come from a FAKE NVML "
                     f"({FAKE_NVML_ENV} is set): they are not measurements")


def nvml_kind(health_report: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """"fake" when $BENCHFLOW_FAKE_NVML is set or the health report came from a fake, "real" when
    a real NVML answered, None when no GPU was looked at."""
    env = os.environ if env is None else env
    if env.get(FAKE_NVML_ENV) or (health_report and _find(health_report, "fake_nvml")):
        return "fake"
    return "real" if health_report else None


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names``; packages that are not installed are left out."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git(code_path: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(code_path), *args],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("git %s failed: %s", " ".join(args), e)
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(code_path: str | Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at ``code_path``; (None, None) when it is not a git checkout."""
    commit = _git(Path(code_path), "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(Path(code_path), "status", "--porcelain", "--untracked-files=no")
    return commit.strip(), (bool(status.strip()) if status is not None else None)


def _find(report: Mapping[str, Any] | None, key: str) -> Any:
    """A key at the top of a health report or in its first GPU entry."""
    if not report:
        return None
    if report.get(key) is not None:
        return report[key]
    for nested in ("gpus", "devices"):
        items = report.get(nested)
        if isinstance(items, list) and items and isinstance(items[0], Mapping) and items[0].get(key) is not None:
            return items[0][key]
    return None


def build_manifest(*, code_path: str | Path | None = None, health_report: Mapping[str, Any] | None = None,
                   artifacts: Mapping[str, str] | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready manifest.

    ``code_path``: a git checkout whose commit and dirty flag are recorded; ``health_report``:
    the GPU health report (driver and CUDA versions are taken from it); ``artifacts``: key ->
    sha256 of the campaign's artifacts; ``extra``: anything else to keep (resolved config, ...).
    """
    commit, dirty = git_state(code_path) if code_path is not None else (None, None)
    packages = package_versions()
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_at": utcnow(),
        "benchflow_version": packages.get("benchflow") or __version__,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "os": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "nvml": nvml_kind(health_report),  # "fake": the GPU values below are not measurements
        "git_commit": commit,
        "git_dirty": dirty,
        "driver_version": _find(health_report, "driver_version"),
        "cuda_version": _find(health_report, "cuda_version"),
        "packages": packages,
        "artifacts": dict(artifacts or {}),
        "health_report": dict(health_report) if health_report else None,
    }
    if manifest["nvml"] == "fake":
        manifest["warning"] = FAKE_NVML_WARNING
    if extra:
        manifest["extra"] = dict(extra)
    return json_safe(manifest)
