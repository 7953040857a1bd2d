"""A real Prefect stack for the deployment tests, all on 127.0.0.1 and always torn down.

``prefect server start`` on Postgres, ``benchflow infra bootstrap``, ``prefect deploy --all`` from
deployments/prefect.yaml, and a process worker on the GPU pool, as subprocesses in their own
process groups (so a worker's flow-run children go down with it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "benchflow-gpu"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PREFECT_*/BENCHFLOW_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENCHFLOW_"))}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                "PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1"})
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def start(name: str, cmd: list[str], env: dict[str, str], cwd: Path, logdir: Path) -> Proc:
    log = logdir / f"{name}.log"
    handle = log.open("wb")
    popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Proc(name, popen, log)


def run(cmd: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def wait_healthy(url: str, proc: Proc, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"prefect server exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {timeout_s}s:\n{proc.tail()}")


@dataclass
class Stack:
    api_url: str
    results_url: str
    base_env: dict[str, str]
    tmp: Path
    s3_endpoint: str = ""
    artifacts: str = ""
    procs: list[Proc] = field(default_factory=list)
    bootstrap_output: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base_env, **extra}

    def bootstrap_env(self) -> dict[str, str]:
        """What the bootstrap turns into Secret blocks and Variables (and nobody else gets)."""
        return self.env(BENCHFLOW_DATABASE_URL=self.results_url, BENCHFLOW_ARTIFACTS=self.artifacts,
                        BENCHFLOW_S3_ENDPOINT_URL=self.s3_endpoint, AWS_ACCESS_KEY_ID="testing",
                        AWS_SECRET_ACCESS_KEY="testing")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.procs)


# -- dedicated pools for the fan-out tests: their workers are the only ones that can take a child ------


def pool_with_backend_deployment(client: httpx.Client, pool: str, name: str,
                                 source: str = "campaign-backend/backend") -> str:
    """A process work pool ``pool`` and a copy of the ``source`` deployment on it, named ``name``
    (``campaign-backend/<name>``): children sent there reach only the workers a test starts on ``pool``."""
    import json

    if client.get(f"/work_pools/{pool}").status_code == 404:
        template = json.loads((REPO / "deployments/work-pools/process.json").read_text())
        response = client.post("/work_pools/", json={"name": pool, "type": "process", "base_job_template": template})
        assert response.status_code in (200, 201), response.text
    flow, dep = source.split("/")
    src = client.get(f"/deployments/name/{flow}/{dep}").json()
    body = {k: src[k] for k in ("flow_id", "entrypoint", "pull_steps", "parameter_openapi_schema",
                                "enforce_parameter_schema", "job_variables", "path", "tags") if k in src}
    response = client.post("/deployments/", json={**body, "name": name, "work_pool_name": pool})
    assert response.status_code in (200, 201), response.text
    return f"{flow}/{name}"


def start_worker(stack: Stack, pool: str, name: str, limit: int | None = None, **env: str) -> Proc:
    """A process worker on ``pool`` (its own BENCHFLOW_HOME and working folder) with ``env`` added;
    ``limit``: at most that many flow runs at once (``--limit``, one per GPU of its host)."""
    workdir = stack.tmp / f"{name}-cwd"
    workdir.mkdir(exist_ok=True)
    worker_env = stack.env(BENCHFLOW_HOME=str(stack.tmp / f"{name}-home"), PREFECT_WORKER_QUERY_SECONDS="1",
                           PREFECT_WORKER_PREFETCH_SECONDS="5", **env)
    return start(name, [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
                        "--name", name, *(["--limit", str(limit)] if limit else [])], worker_env, workdir, stack.tmp)


# -- a worker's process tree, for the worker-kill tests ------------------------------------------------


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` (its flow-run processes, their backends and load clients); [] once it is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def still_alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running: not exited, not a zombie, and not a new process that reused the pid
    (``is_running()`` compares the creation time too)."""
    def alive(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    return [p for p in procs if alive(p)]


def wait_tree_gone(tree: list[psutil.Process], timeout_s: float = 90) -> None:
    """Waits (bounded) until no process of ``tree`` is left; fails naming those still there."""
    def names() -> str:
        out = []
        for p in still_alive(tree):
            try:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
            except psutil.Error:
                pass
        return "still running: " + "; ".join(out)

    wait_for(lambda: not still_alive(tree), timeout_s, interval_s=0.5, what="the killed worker's processes gone",
             detail=names)
