"""The ``process`` launcher (a local command: ``benchflow sim``, ``vllm serve`` on a bare-metal
GPU host, ...) and the ``none`` launcher (an endpoint that is already running).

The process runs in its own session (process group), so teardown reaches the engine's worker
processes too. Its stdout and stderr go to a log file. Each running backend is registered in a
small pid file under ``<BENCHFLOW_HOME>/processes/`` so that a run that starts after a crash can
find and stop its campaign's leftovers (:func:`reap_leftovers`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from benchflow.errors import BackendStartError
from benchflow.launch.base import tail
from benchflow.redact import redact_command
from benchflow.launch.commands import render_process_command
from benchflow.launch.readiness import reachable, wait_ready

log = logging.getLogger(__name__)


#: benchflow's own credentials: a serving engine never needs them, so its process never sees them.
#: (A backend that needs a secret, such as HF_TOKEN, names it in its ``env``.)
SCRUBBED_ENV = frozenset({
    "BENCHFLOW_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PGPASSWORD",
})


def backend_environment() -> dict[str, str]:
    """This process's environment minus benchflow's own credentials."""
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ProcessLauncher:
    """Starts a backend as a child process in its own process group."""

    def __init__(
        self,
        backend: Any,
        model: str,
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        registry_dir: Path | None = None,
        owner: str = "",
        run_id: str = "",
        env_extra: Mapping[str, str] | None = None,
        logger: Any = None,
    ):
        #: Where the launcher logs (a Prefect run logger when a task passes one in).
        self.log: Any = logger or log
        self.backend = backend
        self.model = model
        self.host = host
        self.port = backend.port or free_port(host)
        self.log_path = Path(log_path)
        self.registry_dir = registry_dir
        self.owner = owner
        self.run_id = run_id
        self.argv = render_process_command(backend, model, host, self.port)
        self.env_extra = {str(k): str(v) for k, v in (env_extra or {}).items()}
        self.url: str | None = None
        self.image_digest: str | None = None  # a process has no image
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**backend_environment(), **self.env_extra, **{k: str(v) for k, v in self.backend.env.items()},
               "PYTHONUNBUFFERED": "1"}
        self.log.info("starting backend %s: %s (log: %s)", self.backend.name, " ".join(redact_command(self.argv)),
                      self.log_path)
        with open(self.log_path, "ab") as logf:
            try:
                self._proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
                    self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True,
                )
            except OSError as e:
                raise BackendStartError(f"cannot start backend {self.backend.name}: {e}") from e
        self._register()
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    def alive(self) -> str | None:
        if self._proc is None:
            return "not started"
        code = self._proc.poll()
        return None if code is None else f"exit code {code}"

    def ready(self, timeout_s: float) -> None:
        assert self.url, "start() first"
        took = wait_ready(
            self.url, timeout_s, alive=self.alive, logs=self.logs,
            on_wait=lambda t, why: self.log.info(
                "backend %s still starting after %.0fs (%s); log tail:\n%s", self.backend.name, t, why,
                tail(self.logs(), 5)),
        )
        self.log.info("backend %s ready at %s after %.1fs", self.backend.name, self.url, took)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _terminate_group(proc.pid, grace_s, wait=proc.wait)
        else:
            _kill_group(proc.pid, signal.SIGKILL)  # children may outlive a dead leader
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.log.error("backend %s (pid %s) did not exit after SIGKILL", self.backend.name, proc.pid)
        self._unregister()
        self.log.info("backend %s stopped (%s)", self.backend.name, self.alive())

    # -- leftovers registry ---------------------------------------------------------------
    def _pidfile(self) -> Path | None:
        if self.registry_dir is None or self._proc is None:
            return None
        return self.registry_dir / f"{self._proc.pid}.json"

    def _register(self) -> None:
        path = self._pidfile()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": self._proc.pid, "owner": self.owner, "run_id": self.run_id, "backend": self.backend.name,
                "argv": self.argv, "started": _start_ticks(self._proc.pid)}
        path.write_text(json.dumps(info))

    def _unregister(self) -> None:
        path = self._pidfile()
        if path is not None:
            path.unlink(missing_ok=True)


def _kill_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _terminate_group(pgid: int, grace_s: float, wait=None) -> None:
    """SIGTERM the group, wait up to ``grace_s`` for the leader, then SIGKILL the group."""
    _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    if wait is not None:
        try:
            wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("process group %s ignored SIGTERM for %.0fs; sending SIGKILL", pgid, grace_s)
    else:
        while time.monotonic() < deadline and _pid_alive(pgid):
            time.sleep(0.1)
    _kill_group(pgid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def reap_leftovers(registry_dir: Path, owner: str | None = None, run_id: str | None = None,
                   grace_s: float = 5.0) -> list[dict]:
    """Stops backend processes registered by a run that ended before its teardown.

    Only entries whose ``owner`` (campaign id) and ``run_id`` (flow run id) match, when given,
    and whose pid still runs the registered command are stopped. Returns the entries stopped.
    """
    stopped = []
    for path in sorted(Path(registry_dir).glob("*.json")) if Path(registry_dir).exists() else []:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if (owner is not None and info.get("owner") != owner) or (run_id is not None and info.get("run_id") != run_id):
            continue
        pid = int(info["pid"])
        # the same process: its command line, or (for one that renames itself with setproctitle, such
        # as vllm-router) its start time since boot
        same = _cmdline(pid) == info.get("argv") or (
            info.get("started") is not None and _start_ticks(pid) == info.get("started"))
        if _pid_alive(pid) and same:
            log.warning("stopping leftover backend %s (pid %s) from an earlier run", info.get("backend"), pid)
            _terminate_group(pid, grace_s)
            stopped.append(info)
        path.unlink(missing_ok=True)
    return stopped


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22): with the pid, it
    names one process even after the pid is reused."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


class EndpointLauncher:
    """The ``none`` launcher: an OpenAI-compatible endpoint that is already running.

    benchflow does not own its process: ``stop()`` leaves it running, ``logs()`` is empty, and
    ``alive()`` checks that ``/health`` answers at all (any HTTP status) instead of reading an exit code.
    """

    #: How long ``alive()`` waits for one probe answer.
    alive_timeout_s = 5.0

    def __init__(self, url: str, *, logger: Any = None):
        self.log: Any = logger or log
        self.url = url.rstrip("/")
        self.image_digest: str | None = None

    def start(self) -> str:
        return self.url

    def ready(self, timeout_s: float) -> None:
        took = wait_ready(self.url, timeout_s)
        self.log.info("endpoint %s ready after %.1fs", self.url, took)

    def alive(self) -> str | None:
        why = reachable(self.url, self.alive_timeout_s)
        return None if why is None else f"endpoint does not answer ({why})"

    def logs(self) -> str:
        return ""

    def stop(self, grace_s: float = 10.0) -> None:
        return None
