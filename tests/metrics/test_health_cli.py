"""`benchflow health` end to end: the real NVML path on this GPU-less machine, and fake scenarios."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchflow.cli import main


def _has_real_nvml() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "BENCHFLOW_FAKE_NVML"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "benchflow", "health", *args],
        capture_output=True, text=True, timeout=60, env=full_env, check=False,
    )


@pytest.mark.skipif(_has_real_nvml(), reason="this host has a working NVIDIA driver")
def test_health_without_a_gpu_reports_nvml_unavailable_and_exits_non_zero():
    proc = _cli()
    assert proc.returncode == 1, proc.stderr
    assert "UNHEALTHY" in proc.stdout
    assert "NVML unavailable:" in proc.stdout
    assert "FAKE" not in proc.stdout
    assert "Traceback" not in proc.stderr


def test_fake_scenario_through_the_environment_is_labelled_fake():
    proc = _cli(env={"BENCHFLOW_FAKE_NVML": "ecc"})
    assert proc.returncode == 1
    assert "FAKE NVML" in proc.stdout.splitlines()[0]
    assert "GPU 1 (GPU-fake-0001): ecc_errors" in proc.stdout


def test_healthy_fake_exits_zero_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCHFLOW_FAKE_NVML", "healthy-2gpu")
    out = tmp_path / "health.json"
    assert main(["health", "--json", str(out)]) == 0
    assert "HEALTHY" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["healthy"] is True and data["fake_nvml"] is True
    assert [d["uuid"] for d in data["devices"]] == ["GPU-fake-0000", "GPU-fake-0001"]


def test_json_to_stdout_is_only_json(monkeypatch, capsys):
    monkeypatch.setenv("BENCHFLOW_FAKE_NVML", "nodriver")
    assert main(["health", "--json", "-"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["nvml_available"] is False and data["error"].startswith("NVML unavailable:")


def test_flags_change_the_verdict(monkeypatch, capsys):
    monkeypatch.delenv("BENCHFLOW_FAKE_NVML", raising=False)
    assert main(["health", "--fake-nvml", "foreign"]) == 1
    assert main(["health", "--fake-nvml", "foreign", "--allow-foreign-processes"]) == 0
    assert main(["health", "--fake-nvml", "healthy-2gpu", "--min-devices", "3"]) == 1
    assert "need at least 3" in capsys.readouterr().out
    assert main(["health", "--fake-nvml", "lowmem", "--min-free-gib", "0.25"]) == 0
    assert main(["health", "--fake-nvml", "ecc", "--devices", "0"]) == 0


def test_unknown_scenario_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("BENCHFLOW_FAKE_NVML", "melted")
    assert main(["health"]) == 2
    assert "unknown fake NVML scenario" in capsys.readouterr().err
