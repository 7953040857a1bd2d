"""Launcher harnesses for the contract suite (tests/launch/contract.py): one per launcher, each
building launchers through the library's factory, :func:`benchflow.launch.make_launcher`.

A harness starts the simulator with the engine args a test asks for (``startup-delay-s``,
``crash-after``, ``gpu-memory-utilization``, ...), knows how its launcher words an exit, and
cleans up everything it started under its own unique owner id (never anything else: the Docker
engine is shared).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchflow.launch import Launcher, cleanup_leftovers, make_launcher
from benchflow.spec import OpenAIBackend, SimBackend
from benchflow.spec.backends import RouterSpec

MODEL = "sim-contract"
#: A "server" that ignores SIGTERM (only SIGKILL ends it).
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ignoring SIGTERM', flush=True); time.sleep(600)")


def wait_for(condition: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition") -> Any:
    """Polls ``condition`` until it returns something truthy (returned) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.1)


class Harness:
    """Base: the process launcher running ``benchflow sim`` as its command."""

    kind = "process"
    #: False for an endpoint benchflow does not own: no logs, no exit code, stop leaves it running.
    owns_backend = True

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.owner = f"contract-{uuid.uuid4().hex[:12]}"
        self.run_id = f"run-{uuid.uuid4().hex[:8]}"
        self.registry_dir = tmp_path / "processes"
        self.launchers: list[Launcher] = []

    def backend(self, name: str, engine_args: dict[str, Any]) -> Any:
        command = [sys.executable, "-m", "benchflow", "sim", "--host", "{host}", "--port", "{port}",
                   "--model", "{model}", "{engine_args}"]
        return SimBackend(name=name, kind="sim", launcher="process", command=command, engine_args=engine_args)

    def make(self, name: str = "b", **engine_args: Any) -> Launcher:
        """A launcher (not started) for the simulator with these engine args."""
        return self._track(make_launcher(self.backend(name, engine_args), MODEL,
                                         log_path=self.tmp_path / "logs" / f"backend-{name}.log",
                                         registry_dir=self.registry_dir, owner=self.owner, run_id=self.run_id))

    def make_stubborn(self, name: str = "stubborn") -> Launcher:
        """A launcher whose backend ignores SIGTERM and logs 'ignoring SIGTERM' once it does."""
        backend = SimBackend(name=name, kind="sim", launcher="process", command=[sys.executable, "-c", STUBBORN])
        return self._track(make_launcher(backend, MODEL, log_path=self.tmp_path / "logs" / f"backend-{name}.log",
                                         registry_dir=self.registry_dir, owner=self.owner, run_id=self.run_id))

    def server_log(self, launcher: Launcher) -> str:
        """The simulator's own log (for an endpoint: of the server behind it)."""
        return launcher.logs()

    def exited(self, code: int) -> str:
        """How ``alive()`` words an exit with ``code``."""
        return f"exit code {code}"

    def killed(self) -> str:
        return self.exited(-9)

    def is_exit(self, reason: str | None, code: int) -> bool:
        """Whether ``alive()``'s ``reason`` reports an exit with ``code``."""
        return reason == self.exited(code)

    #: How many processes/containers one launcher starts (what a clean-up after a crash removes).
    parts = 1

    def cleanup(self) -> list[str]:
        """The library's clean-up of this harness's leftovers (as a run after a crash calls it)."""
        return cleanup_leftovers(owner=self.owner, registry_dir=self.registry_dir, containers=False, grace_s=5)

    def leftovers(self) -> list[str]:
        """What this harness's launchers left behind (pid files, containers)."""
        return sorted(p.name for p in self.registry_dir.glob("*.json")) if self.registry_dir.exists() else []

    def close(self) -> None:
        for launcher in self.launchers:
            launcher.stop(0)
        self.cleanup()

    def _track(self, launcher: Launcher) -> Launcher:
        self.launchers.append(launcher)
        return launcher


class EndpointHarness(Harness):
    """The ``none`` launcher in front of a simulator that is already running: started here by a
    process launcher of another owner (and registry), as someone else's server would be."""

    kind = "endpoint"
    owns_backend = False

    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path)
        self.servers = Harness(tmp_path / "servers")
        self._server_of: dict[int, Launcher] = {}

    def make(self, name: str = "b", **engine_args: Any) -> Launcher:
        server = self.servers.make(f"{name}-server", **engine_args)
        url = server.start()
        launcher = self._track(make_launcher(OpenAIBackend(name=name, kind="openai", url=url), MODEL,
                                             log_path=self.tmp_path / "logs" / f"backend-{name}.log",
                                             registry_dir=self.registry_dir, owner=self.owner, run_id=self.run_id))
        self._server_of[id(launcher)] = server
        return launcher

    def server_log(self, launcher: Launcher) -> str:
        return self._server_of[id(launcher)].logs()

    def leftovers(self) -> list[str]:
        return super().leftovers() + self.servers.leftovers()

    def close(self) -> None:
        super().close()
        self.servers.close()


class DockerHarness(Harness):
    """The docker launcher with the ``benchflow/sim`` image (pull_policy never: it is built locally)."""

    kind = "docker"

    def __init__(self, tmp_path: Path, client: Any, image: str):
        super().__init__(tmp_path)
        self.client = client
        self.image = image

    def backend(self, name: str, engine_args: dict[str, Any]) -> Any:
        repository, tag = self.image.rsplit(":", 1)
        return SimBackend(name=name, kind="sim", launcher="docker", image=repository, tag=tag,
                          pull_policy="never", engine_args=engine_args)

    def make_stubborn(self, name: str = "stubborn") -> Launcher:
        launcher = self.make(name)
        launcher.plan.create_kwargs.update(entrypoint=["python", "-c", STUBBORN], command=[])
        return launcher

    def exited(self, code: int) -> str:
        return f"container exited with code {code}"

    def killed(self) -> str:
        return self.exited(137)

    def cleanup(self) -> list[str]:
        return cleanup_leftovers(owner=self.owner, registry_dir=self.registry_dir, containers=True, grace_s=5,
                                 client=self.client)

    def leftovers(self) -> list[str]:
        found = self.client.containers.list(all=True, filters={"label": [f"benchflow.campaign={self.owner}"]})
        return super().leftovers() + sorted(c.name for c in found)


#: The router the replicated harness puts in front of its replicas (vllm-router from PyPI).
ROUTER_COMMAND = [sys.executable, "-m", "vllm_router.launch_router", "--host", "{host}", "--port", "{port}",
                  "--policy", "round_robin", "--worker-urls", "{replica_urls}", "--worker-startup-timeout-secs", "600",
                  "--worker-startup-check-interval", "1", "--prometheus-port", "{metrics_port}"]


class ReplicatedHarness(Harness):
    """Two simulator replicas (process launcher) behind vllm-router: the replicated launcher."""

    kind = "replicated"
    parts = 3  # two replicas and the router
    replicas = 2

    def backend(self, name: str, engine_args: dict[str, Any]) -> Any:
        base = super().backend(name, engine_args)
        return base.model_copy(update={"replicas": self.replicas, "router": RouterSpec(command=ROUTER_COMMAND)})

    def make_stubborn(self, name: str = "stubborn") -> Launcher:
        backend = SimBackend(name=name, kind="sim", launcher="process", command=[sys.executable, "-c", STUBBORN],
                             replicas=self.replicas, router=RouterSpec(command=ROUTER_COMMAND))
        return self._track(make_launcher(backend, MODEL, log_path=self.tmp_path / "logs" / f"backend-{name}.log",
                                         registry_dir=self.registry_dir, owner=self.owner, run_id=self.run_id))

    def is_exit(self, reason: str | None, code: int) -> bool:
        # "replica 0 (b-r0, http://...): exit code 1; last log line: ..."; a signal is named after the
        # code: "exit code -9 (killed by signal 9, SIGKILL)"
        if not reason or not reason.startswith("replica ") or ": " not in reason:
            return False
        cause = reason.split(": ", 1)[1].split(";", 1)[0]
        return cause == self.exited(code) or cause.startswith(f"{self.exited(code)} (killed by signal ")

    def server_log(self, launcher: Launcher) -> str:
        """The replicas' log once every replica listens ("" before: tests wait for all of them)."""
        text = launcher.logs()
        return text if text.count("Uvicorn running on") >= self.replicas else ""
