"""The ``trace`` load point of a campaign spec (benchflow.spec.trace): strict checks of its file,
each problem one line with the spec path; ``benchflow validate``; the cell's send-time error
statistics (computed from injected times); the open loop's send path (benchflow.loadgen)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from time import perf_counter_ns
from types import SimpleNamespace

import pytest
import yaml

from benchflow.cli import main
from benchflow.errors import SpecError
from benchflow.spec import load_spec
from benchflow.spec.trace import TraceLoadPoint
from benchflow.trace_replay import replay_of, send_error_stats, trace_load, trace_summary
from benchflow.traces import TraceRequest, read_trace_strict


def _rows(n=5, step=10.0):
    return [{"timestamp": i * step, "input_length": 600, "output_length": 2, "hash_ids": [i % 2, 100 + i]}
            for i in range(n)]


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _spec(tmp_path, trace, **extra):
    spec = {"name": "t", "allow_simulated": True, "model": "sim-model", "backends": [{"name": "sim", "kind": "sim"}],
            "workload": {"dataset": "D(16,4)", "load_points": [{"trace": {"path": trace, **extra}}]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _problems(tmp_path, trace, **extra):
    path = _spec(tmp_path, trace, **extra)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert e.value.source == str(path)  # the error names the spec file ...
    return e.value.problems


def test_a_valid_trace_load_point_is_one_cell_per_repetition_without_a_stop_condition(tmp_path):
    _write(tmp_path / "t.jsonl", _rows(5))
    spec = load_spec(_spec(tmp_path, "t.jsonl", time_scale=0.5, limit=4))
    [lp] = spec.workload.load_points
    assert isinstance(lp, TraceLoadPoint) and lp.trace.path == tmp_path / "t.jsonl"  # relative to the spec
    assert lp.label == "trace-x0.5" and lp.mode == "trace" and not lp.dynamic
    assert [c.load_label for c in spec.cells()] == ["trace-x0.5"]
    assert lp.describe() == "trace-x0.5: trace t.jsonl, 4 requests over 0.015 s (time scale 0.5, mean 200 req/s)"
    load, prompts = replay_of(lp, seed=7)
    assert load.send_offsets_ns() == [0, 5_000_000, 10_000_000, 15_000_000] and len(prompts) == 4
    assert prompts[0].text.split()[:512] == prompts[2].text.split()[:512]  # equal hash_ids block, equal prefix
    assert prompts[0].text.split()[:512] != prompts[1].text.split()[:512]
    assert json.loads(json.dumps(spec.cells()[0].load_point.model_dump()))["trace"]["path"] == str(tmp_path / "t.jsonl")


def test_a_missing_file_is_one_problem(tmp_path):
    assert _problems(tmp_path, "nope.jsonl") == [
        f"workload.load_points[0].trace.path: file not found: {tmp_path / 'nope.jsonl'} "
        "(a relative path is resolved against the spec's folder)"]


def test_a_bad_json_line_is_named_by_its_number(tmp_path):
    rows = _rows(3)
    _write(tmp_path / "t.jsonl", [rows[0], "{oops", rows[1], rows[2]])
    [p] = _problems(tmp_path, "t.jsonl")
    assert p.startswith("workload.load_points[0].trace.path: t.jsonl: line 2: Expecting property name"), p


def test_decreasing_timestamps_are_refused(tmp_path):
    rows = _rows(3)
    rows[2]["timestamp"] = 5
    _write(tmp_path / "t.jsonl", rows)
    assert _problems(tmp_path, "t.jsonl") == [
        "workload.load_points[0].trace.path: t.jsonl: line 3: timestamp 5 ms is before line 2's 10 ms "
        "(a replayed trace must be in time order)"]


def test_a_negative_timestamp_is_refused(tmp_path):
    rows = _rows(2)
    rows[0]["timestamp"] = -1
    _write(tmp_path / "t.jsonl", rows)
    assert _problems(tmp_path, "t.jsonl") == [
        "workload.load_points[0].trace.path: t.jsonl: line 1: 'timestamp' must be milliseconds >= 0, got -1"]


@pytest.mark.parametrize("scale", [0, -1.5])
def test_a_time_scale_of_zero_or_less_is_refused(tmp_path, scale):
    _write(tmp_path / "t.jsonl", _rows(2))
    problems = _problems(tmp_path, "t.jsonl", time_scale=scale)
    assert f"workload.load_points[0].trace.time_scale: must be > 0.0 (got {scale:g})" in problems, problems


def test_the_strict_reader_keeps_file_order_and_equal_timestamps(tmp_path):
    rows = _rows(3)
    rows[1]["timestamp"] = rows[0]["timestamp"]
    reqs = read_trace_strict(_write(tmp_path / "t.jsonl", rows))
    assert [r.timestamp_ms for r in reqs] == [0, 0, 20]


def test_validate_prints_the_replay(tmp_path, capsys):
    _write(tmp_path / "t.jsonl", _rows(5))
    assert main(["validate", str(_spec(tmp_path, "t.jsonl"))]) == 0
    out = capsys.readouterr().out
    assert "load points [trace]" in out and "  trace: trace t.jsonl, 5 requests over 0.04 s (time scale 1" in out, out
    _write(tmp_path / "t.jsonl", _rows(3)[::-1])
    assert main(["validate", str(_spec(tmp_path, "t.jsonl"))]) == 2
    assert "line 2: timestamp 10 ms is before line 1's 20 ms" in capsys.readouterr().err


def _record(scheduled_ns, start_ns, warmup=False):
    return SimpleNamespace(scheduled_ns=scheduled_ns, start_ns=start_ns, warmup=warmup)


def test_send_error_statistics_from_injected_times():
    load = trace_load([TraceRequest(t, 1, 1) for t in (0, 100, 200, 300, 400)], time_scale=2.0)
    t0 = 10**12
    late_ms = [0.5, 1.0, 2.0, 3.0, 40.0]
    records = [_record(t0 + o, t0 + o + round(ms * 1e6)) for o, ms in zip(load.send_offsets_ns(), late_ms)]
    records.append(_record(t0, t0 + 10**9, warmup=True))  # left out
    records.append(_record(t0, 0))  # never sent: left out
    t = trace_summary(records, "x.jsonl", load)
    assert t["requests"] == 5 and t["sent"] == 5 and t["time_scale"] == 2.0 and t["span_s"] == pytest.approx(0.8)
    assert t["send_error_ms"] == {"p50": pytest.approx(2.0), "p99": pytest.approx(3.0 + 0.96 * 37.0),
                                  "max": pytest.approx(40.0)}
    assert send_error_stats([]) == {"p50": None, "p99": None, "max": None}


async def test_the_open_loop_never_sends_early_and_restores_the_garbage_collector():
    from benchflow import loadgen

    sent: list[tuple[int, int]] = []

    class Client:
        measured_since_ns = None
        waiting = 0

        async def send(self, idx, scheduled_ns, queued_ns):
            sent.append((scheduled_ns, perf_counter_ns()))

    assert gc.isenabled()
    interval = sys.getswitchinterval()
    offsets = [0, 1_000_000, 1_200_000, 5_000_000, 5_000_000, 30_000_000]
    await loadgen._open_loop(Client(), offsets, cap=None)
    assert len(sent) == len(offsets) and all(actual >= due for due, actual in sent)
    assert gc.isenabled() and gc.get_freeze_count() == 0

    async def cancelled() -> None:
        task = asyncio.ensure_future(loadgen._open_loop(Client(), [0, 10**10], cap=None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await cancelled()
    assert gc.isenabled() and gc.get_freeze_count() == 0 and sys.getswitchinterval() == interval


def test_a_changed_trace_file_gives_new_cell_ids(tmp_path):
    _write(tmp_path / "t.jsonl", _rows(5))
    path = _spec(tmp_path, "t.jsonl")
    before = load_spec(path).cells()[0].id
    assert load_spec(path).cells()[0].id == before
    _write(tmp_path / "t.jsonl", _rows(5, step=20.0))
    assert load_spec(path).cells()[0].id != before
