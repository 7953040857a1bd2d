"""Shared helpers of the fault-matrix regression tests (issue 11).

These tests pin what a user sees when something goes wrong, through the surfaces that stay put
while the code underneath changes: the ``benchflow`` CLI (its output and exit code), the rows in
``$BENCHFLOW_HOME/benchflow.db`` (read with plain ``sqlite3``), the artifact folder, and the
process table (psutil). They import nothing of benchflow but the spec loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
#: Upper bound on one ``benchflow`` command in these tests (a busy 2-core machine, an ephemeral
#: Prefect server that can take 20 s to start): a hang fails the test instead of the session.
CLI_TIMEOUT_S = 300


# ---- the user's environment ---------------------------------------------------------------------


@dataclass
class Home:
    """A user's embedded default: ``BENCHFLOW_HOME`` (SQLite + a local artifact folder)."""

    path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.path / "benchflow.db"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BENCHFLOW_", "AWS_", "PREFECT_API_URL"))}
        # a busy 2-core machine can take more than Prefect's default 20 s to start the ephemeral server
        env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "150")
        env.update(BENCHFLOW_HOME=str(self.path), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
        env.update(self.extra_env)
        return env

    def benchflow(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> tuple[int, str]:
        """Runs ``benchflow ARGS`` to its end; returns (exit code, stdout + stderr)."""
        proc = self.start(*args)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        finally:
            stop_tree(proc)
        return proc.returncode, out

    def start(self, *args: str, log: Path | None = None) -> subprocess.Popen:
        """Starts ``benchflow ARGS`` in its own session (output to ``log``, else a pipe)."""
        out: Any = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen([sys.executable, "-m", "benchflow", *args], env=self.env(), cwd=self.path.parent,
                                    stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        finally:
            if log:
                out.close()

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a query on the home's SQLite database, as dicts (no rows while it does not exist)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql, params)]
        except sqlite3.OperationalError as e:  # the schema is not there yet
            if "no such table" in str(e):
                return []
            raise
        finally:
            conn.close()

    def cells(self, campaign_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM cells WHERE campaign_id = ? ORDER BY position", campaign_id)

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM campaigns WHERE id = ?", campaign_id)
        return rows[0] if rows else None

    def summaries(self, campaign_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM cell_summaries WHERE campaign_id = ?", campaign_id)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    path = tmp_path / "home"
    path.mkdir()
    return Home(path)


# ---- specs ----------------------------------------------------------------------------------------


def write_spec(path: Path, backends: list[dict], *, name: str = "faults", repetitions: int = 1,
               max_requests: int = 6, dataset: str = "D(32,8)", load_points: list[dict] | None = None,
               **extra: Any) -> Path:
    spec = {
        "name": name, "allow_simulated": True, "model": {"name": "sim-model"},
        "backends": backends,
        "workload": {"dataset": dataset, "seed": 1, "load_points": load_points or [{"concurrency": 2}],
                     "max_requests": max_requests, "warmup_requests": 1, "request_timeout_s": "20s",
                     "max_duration_s": "60s"},
        "repetitions": repetitions, **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sim_backend(name: str, **engine_args: Any) -> dict:
    """A ``sim`` backend that benchflow launches (give it a unique ``seed`` to find its process by)."""
    return {"name": name, "kind": "sim", "ready_timeout_s": 60, "engine_args": {"time-scale": 0.25, **engine_args}}


# ---- processes ------------------------------------------------------------------------------------


def processes_with(fragment: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line contains ``fragment``, this one excluded."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if fragment in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 120,
             proc: subprocess.Popen | None = None, interval_s: float = 0.2) -> Any:
    """Polls ``condition`` until it is truthy; fails naming ``what`` after ``timeout_s`` or when
    ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = condition()
            if value:
                return value
            pytest.fail(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s:g} s")
        time.sleep(interval_s)


def wait_gone(procs: list[psutil.Process], timeout_s: float = 30) -> list[psutil.Process]:
    """Waits for processes to end; returns those still alive after ``timeout_s``."""
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def stop_tree(proc: subprocess.Popen) -> None:
    """Kills what is left of a ``benchflow`` command started in its own session (test clean-up):
    the command and every process still in its process group (e.g. the ephemeral Prefect server a
    ``kill -9`` orphaned), even after the command itself has ended."""
    group = []
    for other in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if other.pid != os.getpid() and os.getpgid(other.pid) == proc.pid:
                group.append(other)
    for member in group:
        with contextlib.suppress(psutil.Error):
            member.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    psutil.wait_procs(group, timeout=10)
    if proc.stdout and not proc.stdout.closed:
        proc.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- an OpenAI-compatible server whose answers are faults -----------------------------------------

FAULTS = ("ok", "http_429", "malformed", "cut", "silent", "no_headers", "context_overflow", "http_500")


class FaultServer:
    """Answers ``/v1/completions`` (and chat) with a fault per request, cycled from ``behaviours``:

    - ``ok``: a vLLM-shaped stream of ``max_tokens`` one-token messages, usage, ``[DONE]``;
    - ``http_429``: ``429 Too Many Requests`` with a ``Retry-After`` header and an error body;
    - ``malformed``: a 200 stream whose messages are not JSON (``data: {not json``), then ``[DONE]``;
    - ``cut``: one good message, then half a message, then the connection is closed;
    - ``silent``: headers (200), then nothing until the client gives up;
    - ``no_headers``: the request is read and never answered at all;
    - ``context_overflow``: vLLM's 400 for a prompt over ``max-model-len``;
    - ``http_500``: vLLM's 500 body.

    It counts the completion requests it received (``requests``), so a test can tell a retry loop,
    and the most it held at once (``peak_in_flight``). With ``gate=N`` no request is answered until
    N have arrived (or ``gate_timeout_s`` passed): proof that N were in flight together.
    """

    def __init__(self, behaviours: tuple[str, ...], gate: int = 0, gate_timeout_s: float = 120) -> None:
        assert behaviours and set(behaviours) <= set(FAULTS), behaviours
        self.behaviours = behaviours
        self.gate, self.gate_timeout_s = gate, gate_timeout_s
        self._gate_open: asyncio.Event | None = None
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.url = ""
        self._lock = threading.Lock()

    def _next(self) -> str:
        with self._lock:
            behaviour = self.behaviours[self.requests % len(self.behaviours)]
            self.requests += 1
        return behaviour

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1  # one event loop: no lock needed
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        behaviour = self._next()
        if self.gate:
            if self._gate_open is None:
                self._gate_open = asyncio.Event()
            if self.requests >= self.gate:
                self._gate_open.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._gate_open.wait(), self.gate_timeout_s)
        max_tokens = int(body.get("max_tokens") or 8)
        if behaviour in ("http_429", "http_500", "context_overflow"):
            status = {"http_429": 429, "http_500": 500, "context_overflow": 400}[behaviour]
            message = {429: "Too Many Requests: rate limit reached", 500: "internal engine error",
                       400: "This model's maximum context length is 16 tokens. However, you requested 40 tokens "
                            "(32 in the messages, 8 in the completion). Please reduce the length of the messages "
                            "or completion."}[status]
            err = {"object": "error", "message": message, "type": "BadRequestError" if status == 400 else "Error",
                   "param": None, "code": status}
            headers = {"Retry-After": "1"} if status == 429 else None
            return web.json_response(err, status=status, headers=headers)
        if behaviour == "no_headers":
            await asyncio.sleep(3600)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if behaviour == "silent":
            await asyncio.sleep(3600)
        if behaviour == "malformed":
            for _ in range(max_tokens):
                await resp.write(b"data: {not json\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        chunk = {"id": "cmpl-f", "object": "text_completion", "created": 1, "model": body.get("model", "m")}
        n = 1 if behaviour == "cut" else max_tokens
        for k in range(n):
            choice = {"index": 0, "text": " tok", "logprobs": None,
                      "finish_reason": "length" if k == max_tokens - 1 else None}
            await resp.write(b"data: " + json.dumps({**chunk, "choices": [choice]}).encode() + b"\n\n")
        if behaviour == "cut":
            await resp.write(b'data: {"id": "cmpl-f", "cho')
            request.transport.close()
            return resp
        usage = {"prompt_tokens": len(str(body.get("prompt", "")).split()), "completion_tokens": max_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + max_tokens
        await resp.write(b"data: " + json.dumps({**chunk, "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault-model", "object": "model",
                                                              "max_model_len": 16}]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        return app


@contextlib.contextmanager
def fault_server(*behaviours: str, gate: int = 0) -> Iterator[FaultServer]:
    """A :class:`FaultServer` on 127.0.0.1 on its own event loop in a daemon thread."""
    server = FaultServer(tuple(behaviours), gate=gate)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, web.AppRunner] = {}

    async def start() -> None:
        runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        holder["runner"] = runner

    def target() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=target, name="fault-server", daemon=True)
    thread.start()
    assert ready.wait(20), "fault server did not start"
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
        loop.close()
