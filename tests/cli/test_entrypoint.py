"""The ``benchflow`` entry point: ``--version``, and a reader that goes away (``| head -1``)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

BENCHFLOW = str(Path(sys.executable).parent / "benchflow")
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_version():
    proc = subprocess.run([BENCHFLOW, "--version"], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"benchflow {version('benchflow')}"


def test_a_pipe_closed_early_gives_no_traceback(tmp_path):
    # 2 backends x 60 load points x 10 repetitions: far more lines than a pipe's buffer holds
    spec = {"name": "many-cells", "allow_simulated": True, "model": {"name": "m"},
            "backends": [{"name": "a", "kind": "sim"}, {"name": "b", "kind": "sim"}],
            "workload": {"dataset": "D(16,4)", "load_points": [{"concurrency": c} for c in range(1, 61)],
                         "max_requests": 4},
            "repetitions": 10}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen([BENCHFLOW, "validate", str(path), "--cells"], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert first, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert proc.returncode in (0, 141), (proc.returncode, err.decode())
