"""The process launcher: start, readiness, logs, teardown of the whole process group, leftovers."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from benchflow.errors import BackendStartError
from benchflow.launch import ProcessLauncher, reap_leftovers
from benchflow.launch.commands import render_process_command
from benchflow.spec import load_spec


def _backend(command=None, engine_args=None, kind="sim"):
    spec = {
        "name": "t", "allow_simulated": True, "model": {"name": "m"},
        "backends": [{"name": "b", "kind": kind, "launcher": "process",
                      **({"command": command} if command else {}),
                      "engine_args": engine_args or {}, "ready_timeout_s": 5}],
        "workload": {"dataset": "D(8,8)", "load_points": [{"concurrency": 1}], "max_requests": 1},
    }
    return load_spec(spec).backends[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def test_sim_command_renders_engine_args_as_engine_arg_pairs():
    argv = render_process_command(_backend(engine_args={"max-num-seqs": 8, "enable-chunked-prefill": False}),
                                  "m", "127.0.0.1", 9000)
    assert argv[:3] == [sys.executable, "-m", "benchflow.sim"]
    assert argv[argv.index("--port") + 1] == "9000"
    assert "max-num-seqs=8" in argv and "enable-chunked-prefill=false" in argv


def test_unknown_sim_engine_arg_is_a_spec_error():
    from benchflow.errors import SpecError

    with pytest.raises(SpecError) as info:
        _backend(engine_args={"max-num-seqz": 8})
    assert any(p.startswith("backends[0].engine_args.max-num-seqz") for p in info.value.problems)


def test_user_command_placeholders_and_engine_args_token():
    backend = _backend(command=["serve", "{model}", "--port={port}", "{engine_args}", "--json", '{"a": 1}'],
                       engine_args={"max-num-seqs": 4}, kind="vllm")
    argv = render_process_command(backend, "llama", "127.0.0.1", 8123)
    assert argv == ["serve", "llama", "--port=8123", "--max-num-seqs", "4", "--json", '{"a": 1}']


def test_command_that_exits_at_once_fails_fast_with_log_tail(tmp_path):
    backend = _backend(command=[sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(3)"])
    launcher = ProcessLauncher(backend, "m", tmp_path / "b.log", registry_dir=tmp_path / "reg")
    launcher.start()
    t0 = time.monotonic()
    with pytest.raises(BackendStartError) as info:
        launcher.ready(30)
    assert time.monotonic() - t0 < 10, "a dead backend must not wait for the whole timeout"
    assert "exit code 3" in str(info.value)
    assert "boom: bad flag" in info.value.log_tail
    launcher.stop(1)
    assert not _alive(launcher.pid)
    assert not list((tmp_path / "reg").glob("*.json")), "the pid file is removed at teardown"


def test_not_ready_before_timeout_names_the_last_probe(tmp_path):
    backend = _backend(command=[sys.executable, "-c", "import time; print('loading weights', flush=True); time.sleep(60)"])
    launcher = ProcessLauncher(backend, "m", tmp_path / "b.log")
    launcher.start()
    try:
        with pytest.raises(BackendStartError) as info:
            launcher.ready(1.0)
        assert "not ready after 1s" in str(info.value)
        assert "loading weights" in info.value.log_tail
    finally:
        launcher.stop(1)
    assert not _alive(launcher.pid)


CHILD_IGNORES_TERM = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child up', flush=True); time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(120)
"""


def test_stop_kills_the_whole_group_even_when_a_child_ignores_sigterm(tmp_path):
    pidfile = tmp_path / "child.pid"
    backend = _backend(command=[sys.executable, "-c", CHILD_IGNORES_TERM, str(pidfile)])
    launcher = ProcessLauncher(backend, "m", tmp_path / "b.log")
    launcher.start()
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    launcher.stop(grace_s=0.5)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(launcher.pid)
    assert not _alive(child), "a child that ignores SIGTERM is killed after the grace period"


def test_reap_leftovers_stops_only_the_matching_campaign(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    mine = ProcessLauncher(_backend(command=sleeper), "m", tmp_path / "a.log", registry_dir=tmp_path, owner="c1")
    other = ProcessLauncher(_backend(command=sleeper), "m", tmp_path / "b.log", registry_dir=tmp_path, owner="c2")
    mine.start()
    other.start()
    try:
        stopped = reap_leftovers(tmp_path, owner="c1", grace_s=1)
        assert [s["pid"] for s in stopped] == [mine.pid]
        mine._proc.wait(timeout=5)
        assert other.alive() is None
    finally:
        mine.stop(1)
        other.stop(1)


def test_backend_process_does_not_inherit_benchflow_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHFLOW_DATABASE_URL", "postgresql+psycopg://u:topsecret@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecret-aws")
    dump = tmp_path / "env.txt"
    code = f"import os; open({str(dump)!r}, 'w').write(repr(dict(os.environ)))"
    spec_env = {"HF_TOKEN": "hf-given-explicitly"}
    backend = _backend(command=[sys.executable, "-c", code])
    backend = backend.model_copy(update={"env": spec_env})
    launcher = ProcessLauncher(backend, "m", tmp_path / "b.log")
    launcher.start()
    launcher._proc.wait(timeout=10)
    text = dump.read_text()
    assert "topsecret" not in text
    assert "hf-given-explicitly" in text, "a secret the backend names in env is passed"
