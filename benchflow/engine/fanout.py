"""Fan-out of a campaign's backends to child runs, as plain Python: at most ``parallel`` in flight,
a crashed child started again, children stopped on cancel, and never an unbounded wait: with a
:class:`~benchflow.engine.liveness.ChildWatch`, a child no worker picks up ends ``FAILED`` and a
running child gone silent (no heartbeat within its bound) is marked ``Crashed`` and started again.
The caller (flows/campaign_backend.py) passes in how a child is started, how its state is read and
how children are stopped or marked crashed; a state is anything with ``is_final()``, ``type.value``
and ``message`` (a Prefect state in production)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchflow.engine.campaign import cells_to_run
from benchflow.engine.liveness import ChildWatch
from benchflow.engine.steps import StopCheck
from benchflow.errors import CampaignCancelled
from benchflow.spec import CampaignSpec, Cell

#: How often a backend whose child run crashed is started again (for its remaining cells).
MAX_CRASH_RETRIES = 1
#: Seconds between polls of the children's states.
POLL_S = 2.0


def backends_to_run(spec: CampaignSpec, cells: list[Cell], done: set[str] | frozenset[str]) -> list[str]:
    return [b.name for b in spec.backends if cells_to_run(cells, b.name, done)]


def dispatch(names: list[str], parallel: int, start: Callable[[str], Any], state_of: Callable[[Any], Any],
             cancel: StopCheck, stop_children: Callable[[list[Any]], None], *, logger: Any,
             poll_s: float = POLL_S, sleep: Callable[[float], None] = time.sleep,
             max_crash_retries: int = MAX_CRASH_RETRIES, watch: ChildWatch | None = None,
             mark_crashed: Callable[[Any, str], None] | None = None) -> dict[str, tuple[str, str]]:
    """Keeps at most ``parallel`` children in flight until every name ran; returns
    ``{name: (final state type, message)}``. ``start(name)`` returns a run id; ``state_of(id)`` its
    Prefect state. A child that ends CRASHED is started again (``max_crash_retries`` times). On a
    cancel request (raises :class:`CampaignCancelled`) or any exception, the children in flight are
    stopped with ``stop_children`` first. With ``watch``, a child past its bound is ended here:
    a silent running one is marked crashed with ``mark_crashed(id, why)`` (and so started again),
    one never picked up is stopped and reported ``FAILED``."""
    pending, in_flight = list(names), {}
    outcomes: dict[str, tuple[str, str]] = {}
    crashes: dict[str, int] = {}
    try:
        while pending or in_flight:
            reason = cancel()
            if reason:
                raise CampaignCancelled(reason)
            while pending and len(in_flight) < parallel:
                name = pending.pop(0)
                run_id = start(name)
                in_flight[run_id] = name
                if watch is not None:
                    watch.started(run_id)
            for run_id, name in list(in_flight.items()):
                state = state_of(run_id)
                if state is None:
                    continue
                kind, message = state.type.value, state.message or ""
                if not state.is_final():  # within its bound, or ended here with a message naming the run
                    verdict = watch.verdict(run_id, kind) if watch is not None else None
                    if verdict is None:
                        continue
                    kind, message = verdict[0], f"run {run_id}: {verdict[1]}"
                    logger.error("backend %s: %s", name, message)
                    if kind == "CRASHED" and mark_crashed is not None:
                        mark_crashed(run_id, message)
                    else:
                        stop_children([run_id])
                del in_flight[run_id]
                if watch is not None:
                    watch.forget(run_id)
                if kind == "CRASHED" and crashes.get(name, 0) < max_crash_retries:
                    crashes[name] = crashes.get(name, 0) + 1
                    logger.warning("backend %s: its run %s crashed (%s); starting it again for its remaining cells",
                                   name, run_id, message)
                    pending.insert(0, name)
                    continue
                outcomes[name] = (kind, message)
                logger.info("backend %s: run %s ended %s", name, run_id, kind)
            if in_flight or pending:
                sleep(poll_s)
    except BaseException:
        if in_flight:
            stop_children(list(in_flight))
        raise
    return outcomes
