"""Liveness of a fanned-out backend run, as plain Python (no Prefect).

Two halves of one rule, "a backend whose worker died is re-dispatched, and nothing of it stays":

- the child side, :func:`die_with_parent`: a flow-run process started by a Prefect process worker
  runs in its own session (Prefect 3.8's ``isolate_process_group``), so when the worker is
  SIGKILLed nothing stops it: it would go on measuring, holding its GPU slot and sending
  heartbeats, while no worker ever reports it. A daemon thread polls ``getppid()``; when the
  parent has gone, the process sends itself SIGTERM (Prefect's engine turns that into a
  ``Crashed`` state, reported to the API, and the backend is torn down by the engine's
  ``finally``), and SIGKILLs itself after ``grace_s`` if it is still there. Backend processes and
  load clients die with this process (their own ``PR_SET_PDEATHSIG``). ``PR_SET_PDEATHSIG`` is not
  used for the flow-run process itself: it fires when the *thread* that forked the process exits,
  and which of the worker's threads spawns a flow run is Prefect's business, not ours;
  ``getppid()`` changes only when the parent *process* is gone.
- the parent side, :class:`ChildWatch`: the campaign run waits on its children with a bound. A
  child not picked up by any worker within ``pickup_s`` is stopped and reported; a running child
  whose last sign of life (a ``prefect.flow-run.heartbeat`` event, or its start) is older than
  ``stale_s`` is marked ``Crashed`` and re-dispatched (its host died with it, so nothing reported).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: Seconds between two looks at the parent process.
PARENT_POLL_S = 1.0
#: Seconds the process has, after its own SIGTERM, to report Crashed and tear its backend down.
ORPHAN_GRACE_S = 30.0
#: Heartbeats a running child may miss before the parent marks it Crashed.
MISSED_HEARTBEATS = 3
#: Seconds a child may wait for a worker to pick it up (Scheduled/Pending) before the parent gives up
#: (counted from its start, or from the last time a sibling ended).
PICKUP_S = 600.0


def die_with_parent(*, poll_s: float = PARENT_POLL_S, grace_s: float = ORPHAN_GRACE_S,
                    kill: Callable[[int, int], None] = os.kill, getppid: Callable[[], int] = os.getppid,
                    sleep: Callable[[float], None] = time.sleep) -> threading.Thread:
    """Starts the daemon thread that ends this process once its parent process is gone (see the
    module doc). Returns the thread (it runs until the process ends)."""
    parent = getppid()
    me = os.getpid()

    def watch() -> None:
        while getppid() == parent and parent != 1:
            sleep(poll_s)
        # the worker read our stdout/stderr pipes: now broken, and a console handler that meets a
        # broken pipe may raise SystemExit (rich does) in whichever thread logs next, e.g. in the
        # engine's crash handling before it reports Crashed. Nobody reads them any more: /dev/null.
        try:
            _quietly(_silence_stdio)
            kill(me, signal.SIGTERM)
            _quietly(log.error, "process %d: its parent process %d (the worker) is gone; stopping (SIGTERM, "
                     "then SIGKILL after %.0fs)", me, parent, grace_s)
            sleep(grace_s)
        finally:
            kill(me, signal.SIGKILL)

    thread = threading.Thread(target=watch, name="benchflow-die-with-parent", daemon=True)
    thread.start()
    return thread


def _silence_stdio() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _quietly(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except BaseException:  # noqa: BLE001 - SystemExit from a console handler on a broken pipe included
        pass


def stale_after(heartbeat_s: float | None, missed: int = MISSED_HEARTBEATS) -> float:
    """How long a running child may go without a sign of life: ``missed`` heartbeats plus one,
    at Prefect's heartbeat frequency (180 s when unset, Prefect 3.8's default)."""
    beat = float(heartbeat_s or 180)
    return beat * (missed + 1)


@dataclass
class ChildWatch:
    """The parent's bound on each child run it waits for. ``heartbeat_of(run_id)`` returns the epoch
    seconds of the child's last heartbeat, or None (none yet, or unknown)."""

    heartbeat_of: Callable[[object], float | None]
    stale_s: float
    pickup_s: float = PICKUP_S
    clock: Callable[[], float] = time.time
    _started: dict[object, float] = field(default_factory=dict)
    _running_since: dict[object, float] = field(default_factory=dict)

    def started(self, run_id: object) -> None:
        self._started[run_id] = self.clock()

    def forget(self, run_id: object) -> None:
        """``run_id`` ended. Its siblings still waiting for a worker wait anew: a pool whose
        concurrency limit is below ``parallel`` takes them only as others end."""
        self._started.pop(run_id, None)
        self._running_since.pop(run_id, None)
        now = self.clock()
        for waiting in [r for r in self._started if r not in self._running_since]:
            self._started[waiting] = now

    def verdict(self, run_id: object, kind: str) -> tuple[str, str] | None:
        """None while ``run_id`` (in the non-final state ``kind``) is within its bound; else
        ``("CRASHED", why)`` for a running child gone silent, ``("FAILED", why)`` for one no worker took."""
        now = self.clock()
        started = self._started.setdefault(run_id, now)
        if kind != "RUNNING":
            if kind in ("SCHEDULED", "PENDING", "LATE") and now - started > self.pickup_s:
                return "FAILED", (f"not picked up by a worker within {self.pickup_s:.0f}s: is a worker running on "
                                  "the GPU work pool?")
            return None
        since = self._running_since.setdefault(run_id, now)
        beat = self.heartbeat_of(run_id)
        last = max(since, beat or 0.0)
        if now - last > self.stale_s:
            return "CRASHED", (f"no heartbeat for {now - last:.0f}s (bound {self.stale_s:.0f}s): its worker or host "
                               "is gone; marked Crashed by the campaign run")
        return None
