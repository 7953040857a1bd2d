"""`benchflow bench --slo`: the campaign spec's slo on the command line; goodput and SLO attainment."""

from __future__ import annotations

import json

import pytest

from benchflow.cli import main
from benchflow.cli.bench import parse_slo
from benchflow.errors import SpecError
from benchflow.spec import load_spec
from tests.support.stream_server import StreamServerConfig, serve_in_thread

TTFT_MS, GAP_MS = 30.0, 2.0


def test_parse_slo_matches_the_spec_slo():
    parsed = parse_slo("ttft:p99=200ms,tpot:p90=50ms, e2e.mean<=2s")
    assert parsed == {"ttft": {"p99": 0.2}, "tpot": {"p90": 0.05}, "e2e": {"mean": 2.0}}
    spec = load_spec({"name": "x", "model": "m", "backends": [{"name": "b", "kind": "openai", "url": "http://h:1"}],
                      "workload": {"dataset": "D(8,8)", "load_points": [{"concurrency": 1}], "max_requests": 1},
                      "slo": {"ttft": {"p99": "200ms"}, "tpot": {"p90": "50ms"}, "e2e": {"mean": "2s"}}})
    assert parsed == spec.slo


@pytest.mark.parametrize("text,message", [
    ("ttft:p99=200", "a unit is required"),
    ("foo:p99=1s", "--slo foo: unknown metric; expected one of 'ttft', 'tpot', 'itl' or 'e2e'"),
    ("ttft:p42=1s", "--slo ttft:p42: unknown stat"),
    ("ttft=1s", "expected METRIC:STAT=DURATION"),
    ("ttft:p99=1ms,ttft:p99=2ms", "ttft:p99 is given twice"),
    ("ttft:p99=0ms", "--slo ttft:p99: must be greater than 0"),
    (" , ", "--slo: empty"),
])
def test_parse_slo_errors_name_the_item(text, message):
    with pytest.raises(SpecError) as e:
        parse_slo(text)
    assert message in "\n".join(e.value.problems)


def test_a_bad_slo_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--concurrency", "1", "--slo", "ttft:p99=5"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--slo" in err and "a unit is required" in err


@pytest.mark.integration
def test_bench_prints_goodput_and_attainment(tmp_path, capsys):
    out = tmp_path / "s.json"
    with serve_in_thread(StreamServerConfig(ttft_s=TTFT_MS / 1e3, gap_s=GAP_MS / 1e3)) as srv:
        # every request meets a generous SLO; none meets a TTFT below the server's own delay
        code = main(["bench", "--url", srv.url, "--model", "m", "--dataset", "D(8,4)", "--concurrency", "2",
                     "--requests", "6", "--json", str(out), "--slo", "ttft:p99=5s,tpot:p90=1s"])
        good = json.loads(out.read_text())
        printed = capsys.readouterr().out
        code_bad = main(["bench", "--url", srv.url, "--model", "m", "--dataset", "D(8,4)", "--concurrency", "2",
                         "--requests", "6", "--json", str(out), "--slo", f"ttft:p50={TTFT_MS / 2:g}ms"])
        bad = json.loads(out.read_text())
        printed_bad = capsys.readouterr().out
    assert code == 0 and code_bad == 0
    assert good["slo_attainment"] == 1.0 and good["goodput"] == pytest.approx(good["request_throughput"])
    assert good["slo_met"] is True and good["slo_violations"] == []
    assert "goodput (req/s)" in printed and "SLO attainment" in printed
    assert "SLO (ttft p99 <= 5000 ms, tpot p90 <= 1000 ms): goodput" in printed and "attainment 100.0%" in printed
    assert bad["slo_attainment"] == 0.0 and bad["goodput"] == 0.0 and bad["slo_met"] is False
    assert "attainment 0.0%" in printed_bad and "missed: ttft p50" in printed_bad


@pytest.mark.integration
def test_without_slo_there_is_no_goodput(tmp_path, capsys):
    out = tmp_path / "s.json"
    with serve_in_thread(StreamServerConfig(ttft_s=0.005, gap_s=0.001)) as srv:
        code = main(["bench", "--url", srv.url, "--model", "m", "--dataset", "D(8,4)", "--concurrency", "1",
                     "--requests", "2", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["goodput"] is None and summary["slo_attainment"] is None
    assert "SLO (" not in capsys.readouterr().out
