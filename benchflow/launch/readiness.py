"""The readiness protocol shared by every launcher: ``/health`` answers 2xx, then ``/v1/models``."""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from benchflow.errors import BackendStartError
from benchflow.launch.base import tail

log = logging.getLogger(__name__)


def _get(url: str, timeout_s: float) -> tuple[int, bytes]:
    # urllib cannot take user:password@ in a URL (it reads "password@host" as a port): send it as
    # Basic auth, the way the load generator's client does
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(url)
    if parts.username is not None or parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
        token = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - http(s) only
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read() if e.fp else b""


def probe(base_url: str, timeout_s: float = 2.0) -> str | None:
    """One readiness probe. Returns ``None`` when ready, else why not (one line)."""
    try:
        status, _ = _get(f"{base_url}/health", timeout_s)
        if not 200 <= status < 300:
            return f"/health answered {status}"
        status, body = _get(f"{base_url}/v1/models", timeout_s)
        if not 200 <= status < 300:
            return f"/v1/models answered {status}"
        models = [m.get("id") for m in json.loads(body or b"{}").get("data", [])]
        if not models:
            return "/v1/models lists no model"
        return None
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def reachable(base_url: str, timeout_s: float = 5.0) -> str | None:
    """``None`` when ``/health`` gives any HTTP answer (a server that answers 503 while loading or
    busy is still there), else why not (one line)."""
    try:
        _get(f"{base_url}/health", timeout_s)
        return None
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def wait_ready(
    base_url: str,
    timeout_s: float,
    *,
    alive: Callable[[], str | None] = lambda: None,
    logs: Callable[[], str] = lambda: "",
    on_wait: Callable[[float, str], None] | None = None,
    poll_s: float = 0.25,
    snapshot_every_s: float = 30.0,
) -> float:
    """Blocks until ``base_url`` is ready; returns the seconds it took.

    Fails fast when ``alive()`` reports that the backend exited. ``on_wait(elapsed_s, reason)`` is
    called about every ``snapshot_every_s`` seconds, so callers can log progress and log snapshots
    while an engine spends minutes loading weights.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last_snapshot = start
    reason = "not probed yet"
    while True:
        dead = alive()
        if dead is not None:
            raise BackendStartError(f"backend exited during start-up ({dead})", log_tail=tail(logs()))
        reason = probe(base_url) or ""
        if not reason:
            return time.monotonic() - start
        now = time.monotonic()
        if now >= deadline:
            raise BackendStartError(
                f"backend at {base_url} not ready after {timeout_s:g}s (last probe: {reason})",
                log_tail=tail(logs()),
            )
        if on_wait is not None and now - last_snapshot >= snapshot_every_s:
            last_snapshot = now
            on_wait(now - start, reason)
        log.debug("waiting for %s: %s", base_url, reason)
        time.sleep(min(poll_s, max(0.0, deadline - now)))
