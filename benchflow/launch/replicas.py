"""The replicated launcher: N engine replicas behind a router (a backend with ``replicas``/``router``).

``start()`` starts every replica (each its own launcher: process or docker, its own port and its
own share of ``gpus``) and returns the router's URL at once. ``ready()`` waits for the replicas,
then starts the router as a local process with their URLs (``{replica_urls}``), waits until its
``ready_path`` answers 2xx and it serves ``/v1/models``. The load generator talks to the router
only; :attr:`ReplicatedLauncher.replica_urls` lets the runner sample each replica's ``/metrics``.

``alive()`` names the first dead part (``replica 1 (b-r1, http://...): exit code 1; last log
line: ...``, ``... exit code -9 (killed by signal 9, SIGKILL)`` or ``router: ...``); each part
writes its own file (``backend-<name>.router.log``, ``.replica0.log``, ...) and ``logs()``
merges them line by line with a ``[router]``/``[r0]`` prefix, appending the merged lines to the
backend's log file too (the one stored after teardown).
``stop()`` stops the router first, then the replicas. The router registers its pid like any
process backend, so :func:`benchflow.launch.cleanup_leftovers` stops it after a crash.
"""

from __future__ import annotations

import logging
import re
import signal
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from benchflow.errors import BackendStartError, BenchflowError
from benchflow.launch.base import Launcher, tail
from benchflow.launch.process import ProcessLauncher, free_port
from benchflow.launch.readiness import _get, wait_ready

log = logging.getLogger(__name__)

REPLICA_URLS = "{replica_urls}"


@dataclass
class _RouterBackend:
    """What :class:`ProcessLauncher` needs to know of the router (a backend-like record)."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    kind: str = "router"
    engine_args: dict[str, Any] = field(default_factory=dict)

    def render_engine_args(self) -> list[str]:
        return []


METRICS_PORT = "{metrics_port}"


def render_router_command(command: list[str], replica_urls: list[str], metrics_port: int | None = None) -> list[str]:
    """``command`` with ``{replica_urls}`` filled in: a lone element becomes one argument per URL,
    inside a longer element the URLs are joined with commas. ``{metrics_port}`` becomes a free port
    (for a router's own metrics listener, e.g. vllm-router's ``--prometheus-port``, whose fixed
    default would clash between two routers). ``{port}``/``{host}`` are left for the process launcher."""
    argv: list[str] = []
    for part in command:
        if METRICS_PORT in part:
            part = part.replace(METRICS_PORT, str(metrics_port or free_port()))
        if part == REPLICA_URLS:
            argv += replica_urls
        else:
            argv.append(part.replace(REPLICA_URLS, ",".join(replica_urls)))
    return argv


def _with_signal(why: str) -> str:
    """``exit code -9`` (a process killed by a signal) as ``exit code -9 (killed by signal 9, SIGKILL)``."""
    m = re.fullmatch(r"exit code -(\d+)", why)
    if m is None:
        return why
    try:
        name = signal.Signals(int(m.group(1))).name
    except ValueError:
        name = "unknown signal"
    return f"{why} (killed by signal {m.group(1)}, {name})"


def part_log_path(log_path: Path, part: str) -> Path:
    """Where one part (``router``, ``replica0``, ...) writes its own log, beside the backend's."""
    return log_path.with_name(f"{log_path.stem}.{part}{log_path.suffix}")


class ReplicatedLauncher:
    """N replica launchers plus a router process; see the module docstring."""

    def __init__(self, backend: Any, replicas: list[Launcher], router: ProcessLauncher, *, logger: Any = None,
                 log_path: Path | None = None):
        self.log: Any = logger or log
        self.backend = backend
        self.replicas = replicas
        self.router = router
        self.ready_path: str = backend.router.ready_path
        self.log_path = Path(log_path) if log_path is not None else None
        self.url: str | None = None
        self.image_digest: str | None = None
        self._router_started = False
        self._journal: list[str] = []
        self._read: dict[str, int] = {}

    @property
    def replica_urls(self) -> dict[str, str]:
        """Each started replica's URL by its label (``r0``, ``r1``, ...), for per-replica metrics."""
        return {f"r{i}": r.url for i, r in enumerate(self.replicas) if r.url}

    def start(self) -> str:
        self._router_started = False  # (again after a stop: a restart starts the router anew in ready())
        if not self._read:  # a redeploy's parts append to the same files: merge only what they write now
            self._read = {"router": len(self.router.logs()),
                          **{f"r{i}": len(r.logs()) for i, r in enumerate(self.replicas)}}
        for replica in self.replicas:
            replica.start()
            self.image_digest = self.image_digest or replica.image_digest
        self.url = f"http://{self.router.host}:{self.router.port}"
        self.log.info("backend %s: %d replicas started (%s); the router starts once they are ready",
                      self.backend.name, len(self.replicas), ", ".join(self.replica_urls.values()))
        return self.url

    def ready(self, timeout_s: float) -> None:
        assert self.url, "start() first"
        deadline = time.monotonic() + timeout_s
        for i, replica in enumerate(self.replicas):
            try:
                replica.ready(max(0.0, deadline - time.monotonic()))
            except BackendStartError as e:
                first = str(e).split("\n", 1)[0]
                why = f"not ready after {timeout_s:g}s" if "not ready after" in first else "failed to start"
                raise BackendStartError(f"backend {self.backend.name} {why}: replica {i}: {first}",
                                        log_tail=e.log_tail, transient=e.transient) from e
        if not self._router_started:
            self._start_router()
        self._wait_router(deadline, timeout_s)

    def _start_router(self) -> None:
        urls = [r.url for r in self.replicas]
        self.router.argv = render_router_command(self.router.argv, urls)
        self.router.start()
        self._router_started = True

    def _wait_router(self, deadline: float, timeout_s: float) -> None:
        path_url = f"{self.url}{self.ready_path}"
        reason = "not probed yet"
        while True:
            dead = self.router.alive()
            if dead is not None:
                raise BackendStartError(f"router of backend {self.backend.name} exited during start-up ({dead})",
                                        log_tail=tail(self.router.logs()))
            try:
                status, _ = _get(path_url, 2.0)
                if 200 <= status < 300:
                    break
                reason = f"{self.ready_path} answered {status}"
            except (OSError, ValueError, urllib.error.URLError) as e:
                reason = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if time.monotonic() >= deadline:
                raise BackendStartError(f"backend {self.backend.name} not ready after {timeout_s:g}s: its router at "
                                        f"{self.url} (last probe: {reason})", log_tail=tail(self.router.logs()))
            time.sleep(0.25)
        wait_ready(self.url, max(0.5, deadline - time.monotonic()), alive=self.router.alive, logs=self.router.logs)
        self.log.info("backend %s: router ready at %s in front of %s", self.backend.name, self.url,
                      ", ".join(self.replica_urls.values()))

    def alive(self) -> str | None:
        for i, replica in enumerate(self.replicas):
            why = replica.alive()
            if why is not None:
                last = tail(replica.logs(), 1).strip()
                name = getattr(getattr(replica, "backend", None), "name", f"r{i}")
                return (f"replica {i} ({name}, {replica.url}): {_with_signal(why)}"
                        + (f"; last log line: {last}" if last else ""))
        if self._router_started:
            why = self.router.alive()
            if why is not None:
                return f"router: {why}"
        return None

    def logs(self) -> str:
        """Every part's log so far, line by line with its part's prefix (``[router] ...``,
        ``[r0] ...``), in the order they were read: append-only like any launcher's log, so an
        offset taken earlier still marks where the new lines start."""
        self._collect(final=False)
        return "".join(self._journal)

    def _collect(self, final: bool) -> None:
        parts = [("router", self.router)] if self._router_started else []
        parts += [(f"r{i}", r) for i, r in enumerate(self.replicas)]
        for label, part in parts:
            text = part.logs()
            new = text[self._read.get(label, 0):]
            if not final:
                new = new[: new.rfind("\n") + 1]  # whole lines only, until the part has stopped
            if new:
                self._read[label] = self._read.get(label, 0) + len(new)
                text = "".join(f"[{label}] {line}" for line in new.splitlines(keepends=True))
                text += "" if text.endswith("\n") else "\n"
                self._journal.append(text)
                if self.log_path is not None:  # the backend's log file (stored whole after teardown)
                    self.log_path.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.log_path, "a", encoding="utf-8") as f:
                        f.write(text)

    def stop(self, grace_s: float = 10.0) -> None:
        """Router first (no new requests reach the replicas), then every replica; never raises for
        a part that is already gone, and always tries every part."""
        errors: list[str] = []
        for part in [self.router, *self.replicas]:
            try:
                part.stop(grace_s)
            except Exception as e:  # noqa: BLE001 - stop the others anyway
                errors.append(f"{type(e).__name__}: {e}")
                self.log.error("backend %s: stopping a part failed: %s", self.backend.name, e)
        self._collect(final=True)
        if errors:
            raise BenchflowError(f"backend {self.backend.name}: teardown failed: {errors[0]}")


def make_replicated_launcher(backend: Any, model: str, *, log_path: Path, make_one: Callable[..., Launcher],
                             registry_dir: Path | None = None, owner: str = "", run_id: str = "",
                             env_extra: Mapping[str, str] | None = None, logger: Any = None) -> ReplicatedLauncher:
    """The launcher of a backend with a ``router`` (any ``replicas``). ``make_one(backend, log_path)``
    builds one replica's launcher (process or docker)."""
    log_path = Path(log_path)
    replicas = []
    for i, gpus in enumerate(backend.replica_gpus()):
        one = backend.model_copy(update={"replicas": 1, "router": None, "gpus": gpus, "name": f"{backend.name}-r{i}",
                                         "port": backend.port if backend.replicas == 1 else None})
        replicas.append(make_one(one, part_log_path(log_path, f"replica{i}")))
    spec = backend.router
    router_backend = _RouterBackend(name=f"{backend.name}-router", command=list(spec.command), env=dict(spec.env),
                                    port=spec.port or free_port())
    router = ProcessLauncher(router_backend, model, part_log_path(log_path, "router"), registry_dir=registry_dir,
                             owner=owner, run_id=run_id, env_extra=env_extra, logger=logger)
    return ReplicatedLauncher(backend, replicas, router, logger=logger, log_path=log_path)
