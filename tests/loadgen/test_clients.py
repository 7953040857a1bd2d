"""One cell's load over several client processes (benchflow.clients): the real simulator (and the
streaming test server) over HTTP on 127.0.0.1, real spawned processes."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import psutil
import pytest

from benchflow.cli import main
from benchflow.clients import TIMESTAMP_FIELDS, judge, run_cell_load
from benchflow.records import Prompt, RequestRecord
from benchflow.runner import measure_cell_sync
from benchflow.schedule import send_offsets_ns
from benchflow.spec import ConcurrencyLoad, load_spec
from tests.support.helpers import wait_for
from tests.support.sim_process import SimServer
from tests.support.stream_server import StreamServer, StreamServerConfig

pytestmark = pytest.mark.integration

SAME_CLOCK = "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation


@pytest.fixture(scope="module")
def sim():
    server = SimServer("--time-scale", "0.05", "--max-model-len", "256")
    yield server
    server.stop()


def _spec(url: str, **workload):
    wl = {"dataset": "D(16,8)", "load_points": [{"concurrency": 8}], "max_requests": 48, "warmup_requests": 4,
          **workload}
    spec = load_spec({"name": "x", "model": "sim-model", "backends": [{"name": "ext", "kind": "openai", "url": url}],
                      "workload": wl})
    return spec, spec.cells()[0]


def _max_in_flight(records) -> int:
    events = sorted([(r.start_ns, 1) for r in records] + [(r.end_ns, -1) for r in records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _prompts(n: int = 8, max_tokens: int = 4) -> list[Prompt]:
    return [Prompt(text=" ".join(["w"] * (3 + i)), input_tokens=3 + i, max_tokens=max_tokens) for i in range(n)]


def test_every_timestamp_field_of_a_record_is_moved_onto_the_parents_clock():
    # a new *_ns field must be added to TIMESTAMP_FIELDS (or be a duration, and then named here)
    ns_fields = {f.name for f in dataclasses.fields(RequestRecord) if f.name.endswith("_ns")}
    assert ns_fields == set(TIMESTAMP_FIELDS)


def test_judge_flags_cpu_or_lag_and_suggests_more_clients():
    calm = {"index": 0, "cpu_share": 0.3, "loop_lag_ms": {"p90": 2.0}}
    assert judge([calm], 1) == {"client_bound": False, "client": {"clients": 1, "processes": [calm], "evidence": [],
                                                                  "suggestion": None}}
    busy = {"index": 1, "cpu_share": 0.4, "process_cpu_share": 0.97, "loop_lag_ms": {"p90": 80.0}}
    v = judge([calm, busy], 2)
    assert v["client_bound"] is True
    assert v["client"]["evidence"] == ["client 1 used 97% of a core", "client 1 event-loop lag p90 80.0 ms (>= 50 ms)"]
    assert "clients: 4" in v["client"]["suggestion"] and "--clients 4" in v["client"]["suggestion"]


def test_two_clients_closed_loop_make_one_cell_on_one_clock(sim):
    spec1, cell1 = _spec(sim.url)
    spec2, cell2 = _spec(sim.url, clients=2)
    one = measure_cell_sync(spec1, cell1, sim.url, scrape_interval_s=0.5)
    two = measure_cell_sync(spec2, cell2, sim.url, scrape_interval_s=0.5)
    assert one.status == two.status == "completed", (one.error, two.error)
    assert len(two.run.records) == len(one.run.records) == 52
    assert sorted(r.request_id for r in two.run.records) == list(range(52))
    assert all(r.succeeded for r in two.run.records)
    # the merged records: sorted by send time, each one's own times in order, 8 in flight at most
    starts = [r.start_ns for r in two.run.records]
    assert starts == sorted(starts)
    for r in two.run.records:
        assert r.start_ns <= r.chunks[0][0] <= r.chunks[-1][0] <= r.end_ns
    assert _max_in_flight([r for r in two.run.records if not r.warmup]) <= 8
    # warm-up ended in both processes before the first measured send
    assert max(r.end_ns for r in two.run.records if r.warmup) <= min(r.start_ns for r in two.run.records
                                                                      if not r.warmup)
    # the summary: one cell, the per-process clock offsets and the bound on their error
    s = two.summary
    assert s["completed"] == 48 and s["client"]["clients"] == 2 and s["client_bound"] is False
    clock = s["client"]["clock"]
    assert clock["reference"] == "CLOCK_MONOTONIC"
    procs = clock["processes"]
    assert [p["index"] for p in procs] == [0, 1] and all(p["requests"] > 0 for p in procs)
    assert sum(p["requests"] for p in procs) == 52
    assert len({p["pid"] for p in procs} | {os.getpid()}) == 3
    for p in procs:
        assert {"offset_ns", "uncertainty_ns", "offset_end_ns", "shift_ns", "error_bound_ns"} <= set(p)
        assert 0 < p["error_bound_ns"] < 1_000_000  # well under a millisecond
        if SAME_CLOCK:  # Linux: perf_counter is CLOCK_MONOTONIC, so the offset is sampling noise only
            assert abs(p["shift_ns"]) <= p["error_bound_ns"]
    assert one.summary["client"]["clients"] == 1 and one.summary["client_bound"] is False
    assert multiprocessing.active_children() == []


def test_open_loop_two_clients_send_the_single_process_schedule(sim, tmp_path, capsys):
    out, records = tmp_path / "summary.json", tmp_path / "requests.parquet"
    code = main(["bench", "--url", sim.url, "--model", "sim-model", "--rate", "80", "--requests", "60",
                 "--warmup", "2", "--seed", "11", "--clients", "2", "--dataset", "D(16,8)",
                 "--json", str(out), "--records", str(records)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(out.read_text())
    assert summary["completed"] == 60 and summary["client"]["clients"] == 2
    df = pd.read_parquet(records)
    measured = df[~df["warmup"]].sort_values("request_id")
    assert measured["request_id"].tolist() == list(range(2, 62))
    schedule = send_offsets_ns(80.0, "poisson", n=60, seed=11)
    clock = summary["client"]["clock"]
    error = 2 * clock["error_bound_ns"]  # either end of a difference
    sent = [int(t) for t in measured["scheduled_ns"]]
    for request_id, t, offset in zip(measured["request_id"], sent, schedule):
        assert abs((t - sent[0]) - offset) <= error, (request_id, t - sent[0], offset)
    # dealt round-robin: 30 measured requests each (the 2 warm-up ones go to whichever is free)
    counts = [p["requests"] for p in clock["processes"]]
    assert sum(counts) == 62 and min(counts) >= 30


def _busy(index: int) -> None:
    """A client process whose interpreter is hogged by a busy thread (a CPU-starved client)."""
    if index != 1:
        return
    import threading

    sys.setswitchinterval(0.2)  # the busy thread keeps the GIL for 200 ms at a time

    def spin() -> None:
        while True:
            pass

    threading.Thread(target=spin, daemon=True).start()


def test_a_starved_client_process_marks_the_cell_client_bound(sim):
    ended = []
    run, verdict = _run(run_cell_load(sim.url, "sim-model", _prompts(), ConcurrencyLoad(concurrency=4), clients=2,
                                      max_requests=40, setup=_busy, on_request=ended.append))
    assert len(run.records) == 40 and all(r.succeeded for r in run.records)
    assert len(ended) == 40 and all(e.error_class is None for e in ended)  # the progress display's feed
    assert verdict["client_bound"] is True
    evidence = verdict["client"]["evidence"]
    assert evidence and all(e.startswith("client 1 ") for e in evidence), evidence
    assert "clients: 4" in verdict["client"]["suggestion"]
    starved = verdict["client"]["processes"][1]
    assert starved["loop_lag_ms"]["p90"] >= 50 or starved["process_cpu_share"] >= 0.9


def test_a_starved_single_client_is_client_bound_and_a_normal_one_is_not(sim):
    load = ConcurrencyLoad(concurrency=2)
    _, calm = _run(run_cell_load(sim.url, "sim-model", _prompts(), load, max_requests=20))
    assert calm["client_bound"] is False and calm["client"]["processes"][0]["loop_lag_ms"]["samples"] > 0
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.2)  # the busy thread keeps the GIL for 200 ms at a time
    try:
        spinner.start()
        run, starved = _run(run_cell_load(sim.url, "sim-model", _prompts(), load, max_requests=20))
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        spinner.join(10)
    assert len(run.records) == 20 and starved["client_bound"] is True
    assert starved["client"]["evidence"][0].startswith("client 0 event-loop lag p90")
    assert "clients: 2" in starved["client"]["suggestion"]


def _run(coro):
    import asyncio

    return asyncio.run(coro)


async def test_cancel_and_stall_carry_over_to_several_clients():
    stopping = []

    def should_stop():
        stopping.append(1)
        return "stop now" if len(stopping) >= 4 else None

    cfg = StreamServerConfig(ttft_s=0.01, gap_s=0.05, default_max_tokens=1000)
    async with StreamServer(cfg) as url:
        run, _ = await run_cell_load(url, "m", _prompts(max_tokens=1000), ConcurrencyLoad(concurrency=4), clients=2,
                                     max_requests=50, should_stop=should_stop)
    assert run.stop_reason == "cancelled" and run.stop_detail == {"reason": "stop now"}
    assert len(run.records) == 4 and all(r.incomplete for r in run.records)
    assert multiprocessing.active_children() == []

    cfg = StreamServerConfig(ttft_s=0.002, gap_s=0.001, behaviours=("ok", "ok", "stall"), stall_s=60.0)
    async with StreamServer(cfg) as url:
        run, _ = await run_cell_load(url, "m", _prompts(), ConcurrencyLoad(concurrency=2), clients=2,
                                     max_requests=1000, max_duration_s=120, stall_after_s=1.0)
    assert run.stop_reason == "stalled"
    d = run.stop_detail
    assert d["in_flight"] == 2 and d["stall_after_s"] == 1.0 and d["seconds_without_progress"] >= 1.0
    assert sum(r.incomplete for r in run.records) == 2
    assert multiprocessing.active_children() == []


PARENT = """
import asyncio
from benchflow.cli import main
from benchflow.clients import run_cell_load
from benchflow.records import Prompt
from benchflow.spec import ConcurrencyLoad
prompts = [Prompt(text="w w w", input_tokens=3, max_tokens=8)]
asyncio.run(run_cell_load({url!r}, "sim-model", prompts, ConcurrencyLoad(concurrency=4), clients=2,
                          max_duration_s=300))
"""


def test_killing_the_parent_leaves_no_client_process(sim):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(url=sim.url)], env=env)
    try:
        proc = psutil.Process(parent.pid)

        def clients():
            found = [c for c in proc.children(recursive=True)
                     if any("spawn_main" in part for part in c.cmdline())]
            return found if len(found) >= 2 else None

        children = wait_for(clients, 120, what="two client processes", proc=parent, ignore=(psutil.Error,))
        seen = sim.requests_seen()
        wait_for(lambda: sim.requests_seen() > seen + 8, 60, what="the clients sending requests")
        everything = proc.children(recursive=True)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        gone, alive = psutil.wait_procs(everything, timeout=30)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        assert {c.pid for c in children} <= {p.pid for p in gone}
    finally:
        if parent.poll() is None:
            parent.kill()
