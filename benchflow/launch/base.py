"""The backend launcher port.

A launcher owns one serving backend's lifecycle. The contract:

* ``start()`` starts the backend (or does nothing for an endpoint that is already running) and
  returns its base URL (``http://host:port``, no trailing slash). It must not block until ready.
* ``ready(timeout_s)`` blocks until ``/health`` and then ``/v1/models`` answer, and raises
  :class:`~benchflow.errors.BackendStartError` (with the log tail) when the backend exits
  during start-up or the timeout passes.
* ``alive()`` returns ``None`` while the backend runs, else a one-line reason (exit code; for an
  endpoint that benchflow does not own, why its probe failed).
* ``logs()`` returns the backend's whole log so far ("" when it has none).
* ``stop(grace_s)`` asks the backend to stop (SIGTERM or ``docker stop``), waits up to
  ``grace_s`` so the engine can flush, then kills it. It is idempotent and never raises for a
  backend that is already gone. Callers run it in ``finally``: on success, failure and cancellation.
  After ``stop()``, ``logs()`` still returns the whole log and ``alive()`` the exit reason.
* ``image_digest`` is the digest of the image the backend runs (docker), else ``None``.

What a launcher starts is marked with its ``owner`` (campaign id) and ``run_id`` (a pid file
for a process, labels for a container), so that :func:`benchflow.launch.cleanup_leftovers`
stops it when the run that started it died before its teardown.

Launchers are used from one thread at a time; they are not thread-safe.
"""

from __future__ import annotations

from typing import Protocol


class Launcher(Protocol):
    url: str | None
    image_digest: str | None

    def start(self) -> str: ...

    def ready(self, timeout_s: float) -> None: ...

    def alive(self) -> str | None: ...

    def logs(self) -> str: ...

    def stop(self, grace_s: float = 10.0) -> None: ...


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])
