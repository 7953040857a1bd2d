"""Storage that hangs rather than refuses (issue 11, item 2): a Postgres or an S3 endpoint frozen
with SIGSTOP. The kernel still accepts TCP connections and ACKs data for a stopped process, so
nothing fails; each write must still give up within ``BENCHFLOW_STORE_WRITE_TIMEOUT_S`` and spool,
and the spool must flush once the process runs again.

Real components: a Postgres server (tests/store/pg.py) and a ``moto_server`` process on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from benchflow.store import keys
from benchflow.store.artifacts import LocalArtifactStore
from benchflow.store.config import RetryPolicy
from benchflow.store.db import ResultStore
from benchflow.store.results import PersistOutcome, Results
from benchflow.store.s3 import S3ArtifactStore, make_s3_client
from benchflow.store.spool import Spool
from tests.conftest import free_port
from tests.store import factories as f
from tests.store.pg import PostgresServer, require_pg_bin

pytestmark = pytest.mark.integration

BOUND_S = 3.0
#: How long the test waits for the spool. Before the fix a write to a frozen store never returned.
WAIT_S = 90.0
CID = "hang-1"


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOPs the processes; always SIGCONTs them again."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:  # a backend that just ended
            continue
    try:
        for proc in procs:
            try:
                proc.send_signal(signal.SIGSTOP)
            except psutil.NoSuchProcess:
                continue
        for proc in procs:
            _wait(lambda p=proc: _stopped_or_gone(p), f"pid {proc.pid} to stop", 30)
        yield
    finally:
        for proc in procs:
            try:
                proc.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                continue


def _stopped_or_gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True


def _wait(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _persist_in_thread(results: Results, i: int) -> dict:
    """Persists cell ``i`` in a thread, so the test can bound its wait; returns a box for the outcome."""
    box: dict = {}

    def work() -> None:
        try:
            box["outcome"] = results.persist_cell(
                CID, f.cell(f"cell-{i}", repetition=i, position=i), f.summary(40.0 + i),
                artifacts={keys.REQUESTS: f"requests of cell {i}".encode()})
        except BaseException as e:  # noqa: BLE001 - reported by the test
            box["error"] = e

    threading.Thread(target=work, daemon=True).start()
    return box


def _assert_spooled_within_bound(box: dict, results: Results) -> PersistOutcome:
    _wait(lambda: box, f"the write to give up and spool (bound {BOUND_S}s)", WAIT_S)
    assert "error" not in box, box.get("error")
    outcome = box["outcome"]
    assert outcome.spooled, outcome
    assert "did not answer within" in (outcome.error or "") or "timeout" in (outcome.error or "").lower(), outcome
    assert results.spool.count(CID) == 1
    return outcome


def _start(results: Results) -> None:
    results.store.upgrade()
    assert results.persist_campaign(CID, name="hang", spec=f.spec(), spec_hash="h1",
                                    backends=[f.backend("vllm-a")]).stored
    # a stored cell first: the pool then holds a live connection, the case that hung for good
    box = _persist_in_thread(results, 0)
    _wait(lambda: box, "the first cell to be stored", WAIT_S)
    assert box["outcome"].stored, box


# ---- Postgres ------------------------------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer(require_pg_bin())  # its own server (it gets frozen); skips locally, fails in CI
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def _postgres_pids(server: PostgresServer) -> list[int]:
    postmaster = int((server.datadir / "postmaster.pid").read_text().splitlines()[0])
    return [postmaster, *(c.pid for c in psutil.Process(postmaster).children(recursive=True))]


def test_frozen_postgres_spools_within_the_bound_then_flushes(pg: PostgresServer, tmp_path: Path, caplog):
    store = ResultStore(pg.url())
    results = Results(store, LocalArtifactStore(tmp_path / "artifacts"), Spool(tmp_path / "spool"),
                      retry=RetryPolicy(attempts=3, initial_delay_s=0.2), write_timeout_s=BOUND_S)
    try:
        _start(results)
        caplog.set_level(logging.WARNING, logger="benchflow.store.results")
        with frozen(_postgres_pids(pg)):
            _assert_spooled_within_bound(_persist_in_thread(results, 1), results)
            # a second write while frozen: new connections hang in the handshake; bounded too
            _assert_spooled_within_bound_count(_persist_in_thread(results, 2), results, 2)
        assert any("Spooled to" in rec.getMessage() for rec in caplog.records)
        _flush_until_empty(results)
        assert store.completed_cell_ids(CID) == {"cell-0", "cell-1", "cell-2"}
    finally:
        store.dispose()


def _assert_spooled_within_bound_count(box: dict, results: Results, count: int) -> None:
    _wait(lambda: box, f"the write to give up and spool (bound {BOUND_S}s)", WAIT_S)
    assert "error" not in box, box.get("error")
    assert box["outcome"].spooled, box["outcome"]
    assert results.spool.count(CID) == count


def _flush_until_empty(results: Results) -> None:
    """The stopped server needs a moment to serve again; flush is idempotent, so retry it."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = results.flush()
        if result.remaining == 0 and result.failed == 0:
            return
        assert time.monotonic() < deadline, f"spool never flushed: {result}"
        time.sleep(0.5)


# ---- S3 (moto_server process) --------------------------------------------------------------------


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, subprocess.Popen]]:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(exe).exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        client = make_s3_client(url, region_name="us-east-1")

        def up() -> bool:
            assert proc.poll() is None, "moto_server exited"
            try:
                client.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not up yet
                return False

        _wait(up, "moto_server to answer", 60)
        yield url, proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_frozen_s3_spools_within_the_bound_then_flushes(moto, tmp_path: Path, monkeypatch, caplog):
    url, proc = moto
    bucket = f"bf-{uuid.uuid4().hex[:10]}"
    make_s3_client(url, region_name="us-east-1").create_bucket(Bucket=bucket)
    monkeypatch.setenv("BENCHFLOW_STORE_WRITE_TIMEOUT_S", str(BOUND_S))  # the bound comes from the environment
    results = Results.from_env({
        "BENCHFLOW_HOME": str(tmp_path / "home"), "BENCHFLOW_ARTIFACTS": f"s3://{bucket}/results",
        "BENCHFLOW_S3_ENDPOINT_URL": url, "BENCHFLOW_STORE_WRITE_TIMEOUT_S": str(BOUND_S),
        "BENCHFLOW_STORE_RETRY_DELAY_S": "0.2",
    })
    assert isinstance(results.artifacts, S3ArtifactStore) and results.write_timeout_s == BOUND_S
    try:
        _start(results)
        caplog.set_level(logging.WARNING, logger="benchflow.store.results")
        with frozen([proc.pid]):
            _assert_spooled_within_bound(_persist_in_thread(results, 1), results)
        assert any("Spooled to" in rec.getMessage() for rec in caplog.records)
        _flush_until_empty(results)
        assert results.store.completed_cell_ids(CID) == {"cell-0", "cell-1"}
        assert results.artifacts.exists(keys.cell_key(CID, "cell-1", keys.REQUESTS))
    finally:
        results.store.dispose()


# ---- a whole campaign: `benchflow run` while its Postgres is frozen ------------------------------


def test_campaign_keeps_going_while_postgres_is_frozen(own_pg, s3_url: str, tmp_path: Path):
    """The campaign measured with its database frozen: each cell is spooled within the bound (the
    run does not hang), and once Postgres runs again the run replays the spool and completes."""
    from tests.e2e.conftest import make_deployment, sim, stop_process_group, wait_for, write_spec

    d = make_deployment(own_pg, s3_url, tmp_path)
    plain_env = d.env
    d.env = lambda: {**plain_env(), "BENCHFLOW_STORE_WRITE_TIMEOUT_S": "5",
                     "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    spec = write_spec(tmp_path / "hang.yaml", "e2e-hang", [sim("solo")], repetitions=4, dataset="D(16,48)")
    log = tmp_path / "run.log"
    cid = "e2e-hang"
    proc = d.start_benchflow("run", str(spec), "--campaign-id", cid, log=log)
    try:
        wait_for(lambda: d.cells_stored(cid) >= 1, "the first stored cell", 180, proc, log)
        with frozen(_postgres_pids(own_pg)):
            # before the bound existed, the run sat here, silent, for as long as the server was frozen
            wait_for(lambda: "could not be stored now; spooled to" in log.read_text(), "a spooled cell", WAIT_S,
                     proc, log)
        rc = proc.wait(timeout=300)
    finally:
        stop_process_group(proc, d.home)
    output = log.read_text()
    assert rc == 0, output
    assert "did not answer within 5s" in output
    assert d.read(lambda s: s.get_campaign(cid))["status"] == "completed"
    assert d.read(lambda s: len(s.completed_cell_ids(cid))) == 4
