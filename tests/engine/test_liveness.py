"""The fan-out's liveness rules on plain callables and a real orphaned process: a child whose worker
died stops itself; the parent's wait on each child is bounded (pickup, heartbeat silence)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import psutil

from benchflow.engine.fanout import dispatch
from benchflow.engine.liveness import ChildWatch, stale_after


@dataclass
class _Type:
    value: str


@dataclass
class _State:
    kind: str
    message: str = ""

    @property
    def type(self) -> _Type:
        return _Type(self.kind)

    def is_final(self) -> bool:
        return self.kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_running_child_is_marked_crashed_and_started_again():
    clock, beats = _Clock(), {0: 1000.0}
    states = {0: "RUNNING", 1: "RUNNING"}
    started, crashed = [], []

    def start(name):
        started.append(name)
        return len(started) - 1

    def state_of(run_id):
        if run_id == 1 and clock.now > 1100:
            return _State("COMPLETED")
        return _State(states[run_id])

    def sleep(s):
        clock.now += 10

    watch = ChildWatch(heartbeat_of=beats.get, stale_s=60, pickup_s=30, clock=clock)
    out = dispatch(["a"], 1, start, state_of, lambda: None, lambda ids: None, logger=logging.getLogger("t"),
                   sleep=sleep, watch=watch, mark_crashed=lambda rid, why: crashed.append((rid, why)))
    assert started == ["a", "a"], "the silent run is replaced by a new one"
    assert crashed and crashed[0][0] == 0 and "no heartbeat for" in crashed[0][1], crashed
    assert out == {"a": ("COMPLETED", "")}


def test_a_child_silent_twice_is_reported_with_its_run_named():
    clock = _Clock()
    watch = ChildWatch(heartbeat_of=lambda rid: None, stale_s=60, clock=clock)
    ids = iter(range(10))

    def sleep(s):
        clock.now += 10

    out = dispatch(["a"], 1, lambda n: next(ids), lambda rid: _State("RUNNING"), lambda: None, lambda ids: None,
                   logger=logging.getLogger("t"), sleep=sleep, watch=watch, mark_crashed=lambda rid, why: None)
    kind, message = out["a"]
    assert kind == "CRASHED" and message.startswith("run 1: no heartbeat for"), out


def test_a_child_no_worker_picks_up_is_stopped_and_fails_with_its_name():
    clock, stopped = _Clock(), []
    watch = ChildWatch(heartbeat_of=lambda rid: None, stale_s=60, pickup_s=30, clock=clock)

    def sleep(s):
        clock.now += 10

    out = dispatch(["a", "b"], 2, lambda n: n, lambda rid: _State("SCHEDULED" if rid == "a" else "COMPLETED"),
                   lambda: None, stopped.extend, logger=logging.getLogger("t"), sleep=sleep, watch=watch)
    assert stopped == ["a"]
    assert out["a"][0] == "FAILED" and "run a: not picked up by a worker within 30s" in out["a"][1], out
    assert out["b"] == ("COMPLETED", "")


def test_a_child_waiting_behind_its_siblings_waits_anew_when_one_ends():
    clock = _Clock()
    watch = ChildWatch(heartbeat_of=lambda rid: clock.now, stale_s=60, pickup_s=30, clock=clock)
    watch.started("a"), watch.started("b")
    assert watch.verdict("a", "RUNNING") is None
    clock.now += 25
    watch.forget("a")  # a sibling ended: the pool had room again only now
    clock.now += 25
    assert watch.verdict("b", "SCHEDULED") is None, "50 s since its start, 25 s since a sibling ended"
    clock.now += 10
    assert watch.verdict("b", "PENDING")[0] == "FAILED"


def test_heartbeats_keep_a_long_child_alive():
    clock = _Clock()
    watch = ChildWatch(heartbeat_of=lambda rid: clock.now - 5, stale_s=60, clock=clock)
    for _ in range(100):
        clock.now += 30
        assert watch.verdict("x", "RUNNING") is None
    assert stale_after(30) == 120 and stale_after(None) == 720


_ORPHAN = textwrap.dedent("""
    import os, sys, time, signal
    from benchflow.engine.liveness import die_with_parent
    def term(*a):
        open(sys.argv[1], "w").write("sigterm")
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, term)
    die_with_parent(poll_s=0.2, grace_s=5)
    open(sys.argv[2], "w").write(str(os.getpid()))
    while True:
        time.sleep(0.1)
""")
_MIDDLE = textwrap.dedent("""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], start_new_session=True)
    time.sleep(3600)
""")


def _poll(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.1)


def test_a_process_whose_parent_is_sigkilled_stops_itself_with_sigterm(tmp_path):
    marker, pidfile = tmp_path / "term", tmp_path / "pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    middle = subprocess.Popen([sys.executable, "-c", _MIDDLE, _ORPHAN, str(marker), str(pidfile)], env=env)
    try:
        _poll(lambda: pidfile.exists() and pidfile.read_text(), 60, "the grandchild started")
        child = psutil.Process(int(pidfile.read_text()))
        assert child.ppid() == middle.pid
        os.kill(middle.pid, signal.SIGKILL)  # the "worker" dies; its child runs in its own session
        middle.wait(10)
        _poll(lambda: marker.exists(), 30, "the orphan got its SIGTERM")
        _poll(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 30, "the orphan gone")
    finally:
        if middle.poll() is None:
            middle.kill()
