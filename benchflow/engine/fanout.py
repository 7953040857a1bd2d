"""Fan-out of a campaign's backends to child runs, as plain Python: at most ``parallel`` in flight,
a crashed child started again, children stopped on cancel. The caller (flows/campaign_backend.py)
passes in how a child is started, how its state is read and how children are stopped; a state is
anything with ``is_final()``, ``type.value`` and ``message`` (a Prefect state in production)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchflow.engine.steps import StopCheck
from benchflow.errors import CampaignCancelled
from benchflow.spec import CampaignSpec, Cell

#: How often a backend whose child run crashed is started again (for its remaining cells).
MAX_CRASH_RETRIES = 1
#: Seconds between polls of the children's states.
POLL_S = 2.0


def backends_to_run(spec: CampaignSpec, cells: list[Cell], done: set[str] | frozenset[str]) -> list[str]:
    return [b.name for b in spec.backends if any(c.backend == b.name and c.id not in done for c in cells)]


def dispatch(names: list[str], parallel: int, start: Callable[[str], Any], state_of: Callable[[Any], Any],
             cancel: StopCheck, stop_children: Callable[[list[Any]], None], *, logger: Any,
             poll_s: float = POLL_S, sleep: Callable[[float], None] = time.sleep,
             max_crash_retries: int = MAX_CRASH_RETRIES) -> dict[str, tuple[str, str]]:
    """Keeps at most ``parallel`` children in flight until every name ran; returns
    ``{name: (final state type, message)}``. ``start(name)`` returns a run id; ``state_of(id)`` its
    Prefect state. A child that ends CRASHED is started again (``max_crash_retries`` times). On a
    cancel request (raises :class:`CampaignCancelled`) or any exception, the children in flight are
    stopped with ``stop_children`` first."""
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
                in_flight[start(name)] = name
            for run_id, name in list(in_flight.items()):
                state = state_of(run_id)
                if state is None or not state.is_final():
                    continue
                del in_flight[run_id]
                kind = state.type.value
                if kind == "CRASHED" and crashes.get(name, 0) < max_crash_retries:
                    crashes[name] = crashes.get(name, 0) + 1
                    logger.warning("backend %s: its run %s crashed (%s); starting it again for its remaining cells",
                                   name, run_id, state.message)
                    pending.insert(0, name)
                    continue
                outcomes[name] = (kind, state.message or "")
                logger.info("backend %s: run %s ended %s", name, run_id, kind)
            if in_flight or pending:
                sleep(poll_s)
    except BaseException:
        if in_flight:
            stop_children(list(in_flight))
        raise
    return outcomes
