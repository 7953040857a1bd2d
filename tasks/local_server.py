"""The throwaway Prefect server behind ``benchflow run`` (no ``PREFECT_API_URL``).

- It is started here, in the main thread, before the flow: with a generous start-up timeout
  (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, default 120 s instead of Prefect's 20 s,
  since a busy 2-core machine can take longer), and a failure to start becomes one clear line.
- It dies with its parent: the uvicorn child gets ``PR_SET_PDEATHSIG`` = SIGTERM, so a
  ``kill -9`` of ``benchflow run`` does not leave it behind. (The signal follows the *thread*
  that started it; the main thread lives as long as the process.)
- ``crash_orphaned_run``: on a resume, the earlier flow run of the campaign that a killed process
  left ``Running`` is marked ``Crashed``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from benchflow.errors import BenchflowError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_S = 120.0
_PR_SET_PDEATHSIG = 1


class LocalServerError(BenchflowError):
    """The throwaway Prefect server did not start."""


def startup_timeout_s(env: dict[str, str] | None = None) -> float:
    """The user's ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, else 120 s."""
    raw = (os.environ if env is None else env).get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_STARTUP_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError as e:
        raise LocalServerError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from e
    if value <= 0:
        raise LocalServerError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def _die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: SIGTERM to this child when the thread that forked it (the main thread) dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _PdeathsigSubprocess:
    """Prefect's server module's view of ``subprocess``: Popen children die with their parent."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 - mirrors subprocess.Popen
        if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread() \
                and kwargs.get("preexec_fn") is None:
            parent = os.getpid()
            kwargs["preexec_fn"] = lambda: _die_with_parent(parent)
        return subprocess.Popen(*args, **kwargs)


def install_die_with_parent() -> None:
    """Makes every throwaway server Prefect starts from the main thread die with this process."""
    from prefect.server.api import server as server_module

    if not isinstance(server_module.subprocess, _PdeathsigSubprocess):
        server_module.subprocess = _PdeathsigSubprocess()


def start_local_server(timeout_s: float | None = None) -> str | None:
    """Starts the throwaway server unless ``PREFECT_API_URL`` is set; returns its API URL (or None).

    Raises :class:`LocalServerError` with one line saying what to do when it does not start.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL"):
        return None
    timeout = startup_timeout_s() if timeout_s is None else timeout_s
    install_die_with_parent()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    try:
        server.start(timeout=timeout)  # type: ignore[arg-type] - Prefect compares it with a float
    except Exception as e:  # noqa: BLE001 - Prefect raises RuntimeError (timeout) or httpx errors
        server.stop()
        raise LocalServerError(
            f"the temporary Prefect server did not start within {timeout:g}s ({_short(e)}). On a busy "
            f"machine, set {TIMEOUT_ENV} higher (e.g. 300) and run again, or start a server once "
            "(`prefect server start`) and set PREFECT_API_URL=http://127.0.0.1:4200/api") from e
    log.info("temporary Prefect server at %s (pid %s)", server.api_url,
             server.server_process.pid if server.server_process else "?")
    return server.api_url


def _short(e: Exception) -> str:
    text = str(e).split(" stdout:")[0].strip() or type(e).__name__
    return text.rstrip(".")


def crash_orphaned_run(flow_run_id: str | None, campaign_id: str) -> str | None:
    """Marks ``flow_run_id`` Crashed when it is still Pending/Running and belongs to no deployment
    (a ``benchflow run`` that was killed). Returns the state it had, or None when untouched."""
    if not flow_run_id:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            fr = client.read_flow_run(flow_run_id)
        except (ObjectNotFound, ValueError):
            return None
        if fr.deployment_id is not None or fr.state is None or fr.state.type.value not in ("PENDING", "RUNNING"):
            return None
        old = fr.state.name
        client.set_flow_run_state(flow_run_id, Crashed(message=(
            f"the process running campaign {campaign_id} ended without finishing it (killed?); "
            "resumed by a later run")), force=True)
    log.warning("flow run %s of campaign %s was left %s by a process that died; marked Crashed",
                flow_run_id, campaign_id, old)
    return old
