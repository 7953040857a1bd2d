"""Notice a cancel request for the running flow run, with or without a worker.

Under a worker, Prefect's runner delivers a cancel by stopping the flow's process; run by
``benchflow run`` (an ephemeral server, or ``PREFECT_API_URL`` without a worker) nothing watches,
and a cancelled run would stay ``Cancelling`` while every cell still runs. :class:`CancelWatcher`
polls the flow run's own state in a background thread (every ``interval_s``) and, once it is
``CANCELLING`` or ``CANCELLED``, answers with the reason; the engine checks it between cells and
the runner checks it during a cell (``should_stop``). Calling it never blocks.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from typing import Any
from uuid import UUID

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0
#: Seconds between two looks at the flow run's state (default 2).
INTERVAL_ENV = "BENCHFLOW_CANCEL_POLL_S"


def poll_interval_s() -> float:
    try:
        return max(0.2, float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S))
    except ValueError:
        log.warning("%s: not a number; polling every %gs", INTERVAL_ENV, DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S


class CancelWatcher:
    """``watcher()`` is None until a cancel of ``flow_run_id`` is requested, then the reason.
    ``also``: more flow runs whose cancel counts (the root run of a nightly that runs the campaign
    as a subflow)."""

    def __init__(self, flow_run_id: UUID | str | None, interval_s: float | None = None,
                 also: tuple[UUID | str | None, ...] = ()):
        self.flow_run_id = flow_run_id
        self.watched = [i for i in dict.fromkeys([flow_run_id, *also]) if i is not None]
        self.interval_s = poll_interval_s() if interval_s is None else interval_s
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self) -> str | None:
        return self.reason

    def __enter__(self) -> CancelWatcher:
        if self.watched:
            ctx = contextvars.copy_context()  # the Prefect settings (API URL) of this flow run
            self._thread = threading.Thread(target=ctx.run, args=(self._watch,), name="benchflow-cancel-watcher",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=min(self.interval_s, 30) + 5)

    def _watch(self) -> None:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                while not self._stop.wait(self.interval_s):
                    if self._check(client):
                        return
        except Exception as e:  # noqa: BLE001 - no API: nothing to watch; the campaign runs on
            log.warning("cannot watch flow run %s for cancellation: %s", self.flow_run_id, e)

    def _check(self, client: Any) -> bool:
        from prefect.client.schemas.objects import StateType

        for flow_run_id in self.watched:
            try:
                run = client.read_flow_run(flow_run_id)
            except Exception as e:  # noqa: BLE001 - a blip of the API: try again next time
                log.debug("reading flow run %s: %s", flow_run_id, e)
                continue
            state = run.state
            if state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED):
                self.reason = f"flow run {run.name} was cancelled (state {state.name})"
                return True
        return False
