"""`benchflow bench` end to end: accuracy against a server with known timing, outputs, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchflow.cli import main
from benchflow.records import frame_to_records
from tests.support import free_port
from tests.support.stream_server import StreamServerConfig, serve_in_process, serve_in_thread

TTFT_MS, GAP_MS = 50.0, 10.0


@pytest.fixture(scope="module")
def timed_server():
    """Known TTFT and gap, in its own process so that client and server don't share a loop."""
    with serve_in_process(StreamServerConfig(ttft_s=TTFT_MS / 1e3, gap_s=GAP_MS / 1e3)) as url:
        yield url


def _bench(url: str, tmp_path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "summary.json"
    code = main(["bench", "--url", url, "--model", "test-model", "--json", str(out), *extra])
    return code, json.loads(out.read_text()) if out.exists() else {}


@pytest.mark.integration
@pytest.mark.parametrize("concurrency,dataset,requests,warmup", [
    (1, "D(32,12)", 12, 1),
    # Varied output lengths keep the 64 streams from moving in lock step, as real traffic does.
    (64, "U(32,64)/(10,30)", 320, 64),
])
def test_bench_reports_known_ttft_and_tpot(timed_server, tmp_path, capsys, concurrency, dataset, requests, warmup):
    code, summary = _bench(timed_server, tmp_path, "--dataset", dataset, "--concurrency", str(concurrency),
                           "--requests", str(requests), "--warmup", str(warmup))
    assert code == 0
    assert summary["completed"] == requests and summary["errors"] == {} and summary["invalid"] is None
    assert summary["ttft_ms"]["p50"] == pytest.approx(TTFT_MS, abs=2.0)
    assert summary["tpot_ms"]["p50"] == pytest.approx(GAP_MS, abs=2.0)
    assert summary["ttft_ms"]["count"] == requests
    printed = capsys.readouterr().out
    assert "ttft_ms" in printed and "tpot_ms" in printed and f"concurrency {concurrency}" in printed


@pytest.mark.integration
def test_bench_json_has_the_summary_shape_and_records_roundtrip(tmp_path):
    records = tmp_path / "out" / "records.parquet"
    cfg = StreamServerConfig(ttft_s=0.002, gap_s=0.001, behaviours=("ok", "ok", "ok", "http_500"))
    with serve_in_thread(cfg) as srv:
        code, summary = _bench(srv.url, tmp_path, "--dataset", "D(16,5)", "--rate", "100", "--arrival", "constant",
                               "--requests", "8", "--warmup", "2", "--api", "chat", "--records", str(records))
    assert code == 0
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(summary[key]) >= {"mean", "p50", "p90", "p95", "p99", "min", "max", "count"}
    for key in ("schema_version", "request_throughput", "output_throughput", "total_throughput", "duration_s"):
        assert key in summary
    assert summary["errors"] == {"http_5xx": 2} and summary["completed"] == 6
    assert summary["mode"] == "open" and summary["target_rate"] == 100
    assert summary["total_output_tokens"] == 6 * 5
    recs = frame_to_records(pd.read_parquet(records))
    assert len(recs) == 10 and sum(r.warmup for r in recs) == 2
    assert all(r.scheduled_ns is not None for r in recs)


@pytest.mark.integration
def test_bench_unreachable_endpoint_is_one_line_and_nonzero(tmp_path, capsys):
    port = free_port()
    code, summary = _bench(f"http://127.0.0.1:{port}", tmp_path, "--concurrency", "4", "--requests", "5")
    captured = capsys.readouterr()
    assert code == 1 and summary == {}
    assert captured.err.strip() == f"error: cannot reach http://127.0.0.1:{port}: connection refused"
    assert "Traceback" not in captured.err + captured.out


def test_bench_open_loop_flags_with_concurrency_are_rejected(tmp_path, capsys):
    code, _ = _bench("http://127.0.0.1:9", tmp_path, "--concurrency", "4", "--max-concurrency", "2")
    assert code == 2
    assert "--max-concurrency: only apply to an open loop" in capsys.readouterr().err


def test_bench_bad_dataset_is_a_usage_error(tmp_path, capsys):
    code, _ = _bench("http://127.0.0.1:9", tmp_path, "--dataset", "Q(1,2)", "--concurrency", "1")
    assert code == 2
    assert "Q(1,2)" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--concurrency", "0"], ["--rate", "-1"], ["--concurrency", "2", "--rate", "3"], []])
def test_bench_rejects_bad_load_flags(tmp_path, args):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--url", "http://127.0.0.1:9", "--model", "m", *args])
    assert e.value.code == 2
