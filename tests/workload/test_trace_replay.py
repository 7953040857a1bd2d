"""``benchflow bench --trace``: a Mooncake-style trace of 1,000 requests replayed over HTTP
against the simulator at its recorded send times. The precise figure (send-time error p99 <= 5 ms
on a quiet machine) is ``bench/traces.py``'s; here every request is sent, and the error is
bounded loosely enough to hold on a machine busy with other work."""

from __future__ import annotations

import json
import random

import pytest

from benchflow.cli import main

pytestmark = pytest.mark.integration

N = 1000
RATE = 200.0  # requests/s of the recorded trace: 5 s of replay
#: Loose: on a loaded machine (2 cores, load average 8) the process is descheduled for up to ~0.3 s
#: mid-replay (measured p99 18-313 ms there); the median stays at a few ms.
LOOSE_P99_MS = 2000.0
LOOSE_P50_MS = 50.0


@pytest.fixture(scope="module")
def sim():
    from tests.support.sim_process import SimServer

    server = SimServer("--time-scale", "0.01")
    yield server
    server.stop()


def make_trace(path, n=N, rate=RATE, seed=1):
    rng = random.Random(seed)
    t, rows = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate) * 1000
        rows.append({"timestamp": round(t, 3), "input_length": rng.randint(16, 700), "output_length": rng.randint(1, 4),
                     "hash_ids": [i % 7] + ([1000 + i] if rng.random() < 0.5 else [])})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_a_1000_request_trace_replays_at_its_recorded_times(sim, tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    rows = make_trace(trace)
    out = tmp_path / "out.json"
    code = main(["bench", "--url", sim.url, "--model", "sim-model", "--trace", str(trace), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads(out.read_text())
    t = summary["trace"]
    assert t["requests"] == N and t["sent"] == N and summary["completed"] == N
    assert t["span_s"] == pytest.approx((rows[-1]["timestamp"] - rows[0]["timestamp"]) / 1e3)
    p99 = t["send_error_ms"]["p99"]
    print(f"send-time error p50 {t['send_error_ms']['p50']:.3f} ms, p99 {p99:.3f} ms")
    assert 0 <= t["send_error_ms"]["p50"] < LOOSE_P50_MS and p99 < LOOSE_P99_MS, t
    assert "trace replay: 1000 of 1000 requests sent" in printed


def test_time_scale_and_requests(sim, tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    rows = make_trace(trace, n=50, rate=20.0)
    out = tmp_path / "out.json"
    code = main(["bench", "--url", sim.url, "--model", "sim-model", "--trace", str(trace), "--time-scale", "0.25",
                 "--requests", "40", "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    t = json.loads(out.read_text())["trace"]
    assert t["requests"] == 40 and t["sent"] == 40 and t["time_scale"] == 0.25
    assert t["span_s"] == pytest.approx((rows[39]["timestamp"] - rows[0]["timestamp"]) * 0.25 / 1e3)


def test_two_client_processes_send_at_the_traces_times(sim, tmp_path, capsys):
    import pandas as pd

    trace = tmp_path / "trace.jsonl"
    rows = make_trace(trace, n=60, rate=50.0, seed=3)
    out, recs = tmp_path / "out.json", tmp_path / "r.parquet"
    code = main(["bench", "--url", sim.url, "--model", "sim-model", "--trace", str(trace), "--clients", "2",
                 "--time-scale", "0.5", "--json", str(out), "--records", str(recs)])
    assert code == 0, capsys.readouterr().out
    assert json.loads(out.read_text())["trace"]["sent"] == 60
    df = pd.read_parquet(recs).sort_values("request_id")
    scheduled_ms = (df["scheduled_ns"] - df["scheduled_ns"].min()) / 1e6
    recorded_ms = [(r["timestamp"] - rows[0]["timestamp"]) * 0.5 for r in rows]
    # the schedule is the trace's (not a constant rate): equal up to the two clocks' offset bound
    assert scheduled_ms.tolist() == pytest.approx(recorded_ms, abs=2.0)


def test_trace_flags_that_do_not_apply(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    make_trace(trace, n=3)
    assert main(["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--trace", str(trace), "--warmup", "2"]) == 2
    assert "--warmup: do not apply to --trace" in capsys.readouterr().err
    assert main(["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--rate", "2", "--time-scale", "2"]) == 2
    assert "--time-scale: only applies to --trace" in capsys.readouterr().err
