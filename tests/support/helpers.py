"""The test helpers every area shares: one ``free_port``, one ``write_spec``, one ``wait_for``.

Tests must hold on a busy 2-core machine, so nothing here asserts on wall-clock time: a test
that waits for something polls for it with a bounded wait (:func:`wait_for`), and the bound is
generous (it only decides how long a *failing* test takes, never whether a passing one passes).
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

# The library's own helper (backends need it in production): one definition, the tests import it.
from benchflow.launch.process import free_port

__all__ = ["PREFECT_STARTUP_TIMEOUT_S", "free_port", "prefect_test_env", "wait_for", "wait_for_async",
           "write_spec"]

T = TypeVar("T")

#: Start-up limit for the throwaway Prefect servers the tests start (Prefect's default is 20 s; on a
#: loaded 2-core machine the ephemeral server took 6-24 s). Pass it to
#: ``prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_TIMEOUT_S)``.
PREFECT_STARTUP_TIMEOUT_S = 120


def prefect_test_env() -> dict[str, str]:
    """Variables for a ``benchflow``/``prefect`` subprocess whose environment a test builds itself
    (tests/conftest.py already sets them in ``os.environ`` for subprocesses that inherit it)."""
    return {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(PREFECT_STARTUP_TIMEOUT_S),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def write_spec(tmp_path: Path, data: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
    """Writes ``data`` (a dict, dumped as YAML in its own key order, or text as is) to
    ``tmp_path / name`` and returns the path."""
    path = Path(tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _describe(predicate: Callable[..., Any], what: str | None) -> str:
    return what or getattr(predicate, "__qualname__", None) or repr(predicate)


def _failure(what: str, timeout_s: float, last: Any, detail: Callable[[], str] | None) -> str:
    message = f"timed out after {timeout_s:g} s waiting for {what}; last value: {last!r}"
    if detail is not None:
        message += "\n" + detail()
    return message


def wait_for(predicate: Callable[[], T], timeout_s: float, interval_s: float = 0.05, *, what: str | None = None,
             ignore: tuple[type[BaseException], ...] = (), proc: subprocess.Popen | None = None,
             detail: Callable[[], str] | None = None) -> T:
    """Calls ``predicate`` every ``interval_s`` until it returns something true, and returns that.

    Raises AssertionError naming ``what`` and the last value after ``timeout_s`` (the predicate
    is always tried once more at the deadline, so a slow machine never fails a condition that
    holds), or as soon as ``proc`` has exited. Exceptions of the ``ignore`` types count as a
    false value (the last value is then the exception). ``detail()`` is appended to the message
    (a log tail, say).
    """
    what = _describe(predicate, what)
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        expired = time.monotonic() >= deadline
        try:
            last = predicate()
        except ignore as e:
            last = e
        else:
            if last:
                return last
        if proc is not None and proc.poll() is not None:
            message = f"process {proc.args!r} exited ({proc.returncode}) before {what}; last value: {last!r}"
            raise AssertionError(message + ("\n" + detail() if detail else ""))
        if expired:
            raise AssertionError(_failure(what, timeout_s, last, detail))
        time.sleep(interval_s)


async def wait_for_async(predicate: Callable[[], T | Awaitable[T]], timeout_s: float, interval_s: float = 0.02, *,
                         what: str | None = None, ignore: tuple[type[BaseException], ...] = (),
                         detail: Callable[[], str] | None = None) -> T:
    """:func:`wait_for` for a coroutine: sleeps with ``asyncio.sleep`` (the event loop keeps
    running) and awaits the predicate's result when it is awaitable."""
    what = _describe(predicate, what)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = None
    while True:
        expired = loop.time() >= deadline
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
        except ignore as e:
            last = e
        else:
            if last:
                return last
        if expired:
            raise AssertionError(_failure(what, timeout_s, last, detail))
        await asyncio.sleep(interval_s)
