"""bench/run_all.py: every benchmark runs, a failing one is reported and the others still run."""

from __future__ import annotations

import json


def _fake(result=None, error=None):
    def main(argv):
        if error:
            raise error
        return result
    return main


def test_a_failing_benchmark_is_reported_and_the_others_still_run(run_all, monkeypatch, tmp_path, capsys):
    modules = {"good": _fake(result={"x": 1.5}), "bad": _fake(error=RuntimeError("server never came up"))}
    monkeypatch.setattr(run_all, "_load", lambda script: type("M", (), {"main": staticmethod(modules[script])}))
    monkeypatch.setattr(run_all, "BENCHMARKS", {
        "bad": ("bad", lambda a: [], lambda r: []),
        "good": ("good", lambda a: [], lambda r: [("the x figure (s)", f"{r['x']:.2f}")]),
    })
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    assert run_all.main([]) == 1
    out = capsys.readouterr().out
    assert "the x figure (s)" in out and "1.50" in out
    assert "FAILED: RuntimeError: server never came up" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(b["name"], b["ok"]) for b in summary["benchmarks"]] == [("bad", False), ("good", True)]
    assert (tmp_path / "summary.md").read_text().count("1.50") == 1


def test_no_sustained_rate_says_why(run_all):
    result = {"sustained_rate_rps": None, "ttft": [],
              "rate_trials": [{"target_rps": 250.0, "client_lag_p99_ms": 52.2, "failed": 0, "incomplete": 0}]}
    (label, value), = run_all.loadgen_rows(result)
    assert "none found" in value and "250 req/s" in value and "52.20 ms" in value
