"""Plain-text tables for summaries and generic rows."""

from __future__ import annotations

import pytest

from benchflow.tables import format_value, render_summary, render_table


@pytest.mark.parametrize("value,text", [
    (None, "-"), (float("nan"), "-"), (True, "yes"), (7, "7"), (0.0, "0"), (50.2549, "50.25"),
    (9.99996, "10.00"), (1234567.8, "1,234,568"), (0.5, "0.5000"), (0.00001234, "1.234e-05"), ("x", "x"),
])
def test_format_value(value, text):
    assert format_value(value) == text


def test_render_table_aligns_numbers_right_and_text_left():
    text = render_table([("ttft_ms", 50.25, 3), ("e2e_ms", 1234.6, 12)], ["metric", "p50", "count"])
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "p50", "count"]
    assert lines[2] == "ttft_ms  50.25      3"
    assert lines[3] == "e2e_ms   1,235     12"
    assert len({len(line) for line in lines}) == 1


def test_render_table_markdown():
    text = render_table([("a", 1), ("bb", None)], ["name", "n"], markdown=True)
    assert text.splitlines() == ["| name | n |", "|------|--:|", "| a    | 1 |", "| bb   | - |"]
    with pytest.raises(ValueError):
        render_table([("a",)], markdown=True)


def test_render_table_pads_short_rows_and_handles_empty():
    assert render_table([("a", 1), ("b",)]).splitlines() == ["a  1", "b"]
    assert render_table([]) == ""


def _summary(**over):
    dist = {"mean": 51.0, "p50": 50.5, "p90": 52.0, "p95": 53.0, "p99": 60.0, "min": 50.0, "max": 61.0, "count": 10}
    empty = dict.fromkeys(dist, None) | {"count": 0}
    s = {"schema_version": 1, "ttft_ms": dist, "tpot_ms": dist, "itl_ms": dist, "e2e_ms": dist, "ntpot_ms": dist,
         "client_lag_ms": empty, "request_throughput": 4.2, "output_throughput": 500.0, "total_throughput": 900.0,
         "goodput": None, "slo_attainment": None, "completed": 10, "failed": 2, "incomplete": 1,
         "errors": {"timeout": 1, "http_5xx": 1}, "error_rate": 0.1667, "invalid": None, "duration_s": 2.5,
         "tokens_estimated": False, "target_rate": None, "achieved_rate": None, "mode": "closed",
         "concurrency": 16, "total_input_tokens": 1280, "total_output_tokens": 1250}
    return s | over


def test_render_summary_shows_latencies_errors_and_validity():
    text = render_summary(_summary(), title="bench")
    assert text.startswith("bench\n=====")
    assert "closed loop, concurrency 16" in text
    assert any(line.startswith("ttft_ms") and "50.50" in line for line in text.splitlines())
    assert "client_lag_ms" not in text  # no values in closed loop
    assert "timeout" in text and "http_5xx" in text
    assert "valid" in text and "yes" in text


def test_render_summary_open_loop_invalid_and_slo():
    s = _summary(mode="open", target_rate=20.0, achieved_rate=15.0, concurrency=None, goodput=3.0,
                 slo_attainment=0.75, invalid="achieved rate 15 req/s is below 95% of the target 20 req/s",
                 errors={}, tokens_estimated=True)
    text = render_summary(s, markdown=True)
    assert "open loop, rate 20 req/s" in text
    assert "no: achieved rate 15 req/s is below 95%" in text
    assert "goodput" in text and "output tokens (estimated)" in text
    assert "error class" not in text
    assert all(line.startswith("|") for line in text.splitlines() if line)
