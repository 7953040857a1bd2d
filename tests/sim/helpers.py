"""Helpers for the simulator tests: engine configs and a simulator started as a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator

from benchflow.sim.config import EngineConfig, build_engine_config, load_sim_config
from benchflow.sim.profiles import StepCosts
from tests.support import wait_for

SIM_CMD = [sys.executable, "-m", "benchflow.sim"]
BENCHFLOW_CMD = [sys.executable, "-m", "benchflow"]


def engine_config(**knobs: Any) -> EngineConfig:
    """An engine config of the default profile with vLLM-named knobs applied."""
    return build_engine_config(load_sim_config({}, knobs))


def tiny_config(**overrides: Any) -> EngineConfig:
    """A small hand-made engine (few blocks) with simple unit costs, for exact tests."""
    base: dict[str, Any] = dict(
        max_num_seqs=4, max_num_batched_tokens=64, num_gpu_blocks=16, block_size=4, max_model_len=64,
        costs=StepCosts(step_overhead_s=1.0, prefill_s_per_token=0.01, per_seq_s=0.1, per_kv_token_s=0.001),
        watermark=0.0,
    )
    base.update(overrides)
    return EngineConfig(**base)


def _get(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


class SimProcess:
    """A simulator subprocess whose output is drained by a thread (so it never blocks)."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.base_url: str | None = None
        self._url_seen = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", line)
            if m and self.base_url is None:
                self.base_url = m.group(1)
                self._url_seen.set()
        self._url_seen.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_url(self, timeout_s: float) -> str:
        self._url_seen.wait(timeout_s)
        if self.base_url is None:
            raise RuntimeError("simulator did not start:\n" + self.output)
        return self.base_url

    def wait_exit(self, timeout_s: float) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        return rc

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait_exit(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait_exit(5)


def run_to_exit(*args: str, cmd: list[str] | None = None, timeout_s: float = 60.0) -> tuple[int, str]:
    """Runs the simulator expecting it to exit by itself; returns (exit code, output)."""
    sim = SimProcess([*(cmd or SIM_CMD), "--port", "0", *args])
    try:
        rc = sim.wait_exit(timeout_s)
    finally:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.wait_exit(5)
    return rc, sim.output


@contextmanager
def sim_process(*args: str, cmd: list[str] | None = None, wait_ready: bool = True,
                startup_timeout_s: float = 60.0) -> Iterator[SimProcess]:
    """Starts the simulator on a free port (``--port 0``, the port is read from the startup line),
    optionally waits for /health, yields it, then sends SIGTERM and waits."""
    sim = SimProcess([*(cmd or SIM_CMD), "--port", "0", *args])
    try:
        base_url = sim.wait_url(startup_timeout_s)
        if wait_ready:
            wait_for(lambda: _get(base_url + "/health") == 200, startup_timeout_s, what="the simulator's /health",
                     proc=sim.proc, detail=lambda: sim.output)
        yield sim
    finally:
        sim.stop()
