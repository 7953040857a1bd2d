"""A cell stops at once on a stalled engine (the real simulator over HTTP, ``--stall-after``) and
when its caller asks it to (``should_stop``); the failure reason names the server's error."""

from __future__ import annotations

import time

import pytest

from benchflow.runner import measure_cell_sync
from benchflow.spec import load_spec
from tests.support.sim_process import SimServer
from tests.support.stream_server import StreamServerConfig, serve_in_thread

pytestmark = pytest.mark.integration


def _spec(url: str, *, stall_after_s: float | None = None, **workload):
    limits = {} if stall_after_s is None else {"stall_after_s": stall_after_s}
    wl = {"dataset": "D(16,64)", "load_points": [{"concurrency": 4}], "max_requests": 400, **workload}
    spec = load_spec({"name": "x", "model": "sim-model", "backends": [{"name": "ext", "kind": "openai", "url": url}],
                      "workload": wl, "limits": limits})
    return spec, spec.cells()[0]


@pytest.fixture
def sim_that_stalls():
    sim = SimServer("--stall-after", "12", "--time-scale", "0.2")
    yield sim
    sim.stop()


def test_a_stalled_engine_stops_the_cell_as_stalled(sim_that_stalls):
    spec, cell = _spec(sim_that_stalls.url, stall_after_s=3.0, max_duration_s=600)
    t0 = time.monotonic()
    outcome = measure_cell_sync(spec, cell, sim_that_stalls.url, scrape_interval_s=0.5)
    elapsed = time.monotonic() - t0
    assert outcome.status == "stalled", outcome.error
    assert elapsed < 120, "stopped by the stall check, not by the 600 s duration bound"
    run = outcome.run
    assert run.stop_reason == "stalled"
    evidence = outcome.summary["stall"]
    assert evidence["in_flight"] >= 1 and evidence["seconds_without_progress"] >= 3.0
    assert evidence["seconds_since_last_token"] is None or evidence["seconds_since_last_token"] >= 3.0
    assert "backend stalled" in outcome.error and "limits.stall_after_s = 3" in outcome.error
    # the records are kept: 12 served requests, the ones in flight at the stall are incomplete
    assert sum(r.succeeded for r in run.records) >= 8
    assert any(r.incomplete for r in run.records)
    assert outcome.artifacts()["requests.parquet"]


def test_stall_check_can_be_turned_off():
    spec, _ = _spec("http://127.0.0.1:9", stall_after_s=None)
    assert spec.limits.stall_after_s == 30.0  # the default
    spec = load_spec({**spec.model_dump(mode="json", exclude_unset=True), "limits": {"stall_after_s": None}})
    from benchflow.runner import stall_after_s

    assert stall_after_s(spec) is None


def test_should_stop_cancels_the_cell_and_keeps_its_records():
    cfg = StreamServerConfig(ttft_s=0.005, gap_s=0.02, default_max_tokens=64)
    with serve_in_thread(cfg) as srv:
        spec, cell = _spec(srv.url)
        asked: list[float] = []

        def should_stop():
            asked.append(time.monotonic())
            return "campaign cancelled by the user" if srv.requests >= 6 else None

        outcome = measure_cell_sync(spec, cell, srv.url, should_stop=should_stop, scrape_interval_s=0.5)
    assert outcome.status == "cancelled"
    assert outcome.error == "campaign cancelled by the user"
    assert outcome.run.stop_reason == "cancelled" and outcome.summary["stop_reason"] == "cancelled"
    assert len(asked) >= 2
    recs = outcome.run.records
    assert 6 <= len(recs) < 400
    assert any(r.incomplete for r in recs)


def test_no_success_names_the_dominant_server_error():
    cfg = StreamServerConfig(ttft_s=0.001, gap_s=0.001, behaviours=("http_400", "http_400", "http_400", "http_500"))
    with serve_in_thread(cfg) as srv:
        spec, cell = _spec(srv.url, max_requests=8)
        outcome = measure_cell_sync(spec, cell, srv.url, scrape_interval_s=0.5)
    assert outcome.status == "failed"
    assert outcome.summary["dominant_error"] == {"message": "400 test server says 400", "count": 6, "failed": 8}
    assert outcome.error == "no request succeeded (http_4xx×6, http_5xx×2): '400 test server says 400' ×6"
