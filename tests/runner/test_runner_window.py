"""A campaign cell takes the load generator's path: its warm-up ends before the window opens,
and its throughput counts the tokens the server wrote inside the window (within 2%)."""

from __future__ import annotations

import pytest

from benchflow.runner import measure_cell_sync
from benchflow.spec import load_spec
from tests.support.stream_server import StreamServerConfig, serve_in_thread

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("bound", [{"max_requests": 24}, {"max_duration_s": 1.0}])
def test_cell_window_matches_the_tokens_the_server_wrote(bound):
    with serve_in_thread(StreamServerConfig(ttft_s=0.003, gap_s=0.003)) as srv:
        spec = load_spec({"name": "x", "model": "m", "backends": [{"name": "ext", "kind": "openai", "url": srv.url}],
                          "workload": {"dataset": "U(8,8)/(10,150)", "load_points": [{"concurrency": 8}],
                                       "warmup_requests": 8, **bound}})
        outcome = measure_cell_sync(spec, spec.cells()[0], srv.url, scrape_interval_s=0.5)
        written = list(srv.written)
    assert outcome.status == "completed", outcome.error
    run, s = outcome.run, outcome.summary
    warm = [r for r in run.records if r.warmup]
    measured = [r for r in run.records if not r.warmup]
    assert len(warm) == 8 and max(r.end_ns for r in warm) <= min(r.start_ns for r in measured)
    start = min(r.start_ns for r in measured)
    end = start + round(s["duration_s"] * 1e9)
    served = sum(n for t, n in written if start <= t <= end)
    assert s["output_throughput"] * s["duration_s"] == pytest.approx(served, rel=0.02)
    assert s["stop_reason"] == ("max_requests" if "max_requests" in bound else "max_duration")
