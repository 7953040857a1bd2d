"""``benchflow bench --sweep N`` and ``--slo-capacity``: the campaign's dynamic load points for a
one-off run, against the simulator over HTTP (a separate process; small, time-scaled cells)."""

from __future__ import annotations

import json

import pytest

from benchflow.cli import main
from benchflow.engine.dynamic import sweep_rates

#: Two sequences at half the default step costs: about 15 req/s synchronous, 30 saturated (D(16,16)).
SIM_ARGS = ("--max-num-seqs", "2", "--time-scale", "0.5")


@pytest.fixture(scope="module")
def sim():
    from tests.support.sim_process import SimServer

    server = SimServer(*SIM_ARGS)
    yield server
    server.stop()


def _bench(url: str, *extra: str) -> list[str]:
    return ["bench", "--url", url, "--model", "sim-model", "--dataset", "D(16,16)", "--arrival", "constant",
            *extra]


@pytest.mark.integration
def test_sweep_measures_the_curve_between_its_reference_runs(sim, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    code = main(_bench(sim.url, "--sweep", "3", "--saturating-concurrency", "8", "--up-to", "1.5",
                       "--requests", "20", "--json", str(out)))
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = json.loads(out.read_text())
    labels = [p["label"] for p in data["points"]]
    assert labels == ["sync", "max", "p1", "p2", "p3"]
    sync, sat = data["sync_rate"], data["saturating_rate"]
    assert 0 < sync < sat, "a closed loop of 8 serves more than one of 1 on a two-sequence engine"
    # the rates are the campaign engine's own (one copy of the logic)
    assert [p["target_rate"] for p in data["points"][2:]] == sweep_rates(sync, sat, 3, 1.5)
    beyond = [p["beyond_saturation"] for p in data["points"][2:]]
    assert beyond == [rate > sat * (1 + 1e-6) for rate in sweep_rates(sync, sat, 3, 1.5)] and beyond[-1]
    for p in data["points"]:
        assert p["summary"]["completed"] > 0 and p["summary"]["ttft_ms"]["p99"] is not None
    header = next(line for line in printed.splitlines() if line.startswith("point"))
    for column in ("target (req/s)", "achieved (req/s)", "output (tok/s)", "TTFT p50 (ms)", "TTFT p99 (ms)",
                   "flags"):
        assert column in header
    p3 = next(line for line in printed.splitlines() if line.startswith("p3 "))
    assert "beyond_saturation" in p3


@pytest.mark.integration
def test_slo_capacity_brackets_then_bisects(sim, tmp_path, capsys):
    out = tmp_path / "cap.json"
    # 4 req/s is far below the engine's capacity; 400 req/s queues 30 requests for about a second
    code = main(_bench(sim.url, "--slo-capacity", "ttft.p99<=300ms", "--attainment", "0.9", "--min-rate", "4",
                       "--max-rate", "400", "--precision", "0.5", "--requests", "30", "--json", str(out)))
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = json.loads(out.read_text())
    assert data["status"] == "found", data
    assert data["slo"] == {"ttft": {"p99": 0.3}} and data["target_attainment"] == 0.9
    probes = data["probes"]
    assert probes[0]["rate_rps"] == 4 and probes[0]["met"]
    assert any(not p["met"] for p in probes)
    for p in probes:
        assert p["met"] == (p["attainment"] is not None and not p["saturated"] and p["attainment"] >= 0.9)
    lo, hi = data["bracket"]
    assert lo < data["capacity_rps"] < hi and hi / lo - 1 <= 0.5
    assert len(data["probe_summaries"]) == len(probes)
    assert f"status found; {len(probes)} probes" in printed
    assert "SLO capacity (ttft p99 <= 300 ms; attainment >= 0.9):" in printed


@pytest.mark.integration
def test_slo_capacity_above_max_rate_says_so(sim, tmp_path, capsys):
    out = tmp_path / "cap.json"
    code = main(_bench(sim.url, "--slo-capacity", "e2e:p99=30s", "--min-rate", "2", "--max-rate", "8",
                       "--requests", "8", "--json", str(out)))
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = json.loads(out.read_text())
    assert data["status"] == "above_max" and data["capacity_rps"] is None
    assert [p["rate_rps"] for p in data["probes"]] == [2, 4, 8]
    assert "the capacity is above max_rate" in printed


@pytest.mark.parametrize("extra,message", [
    (("--slo-capacity", "ttft:p99=1s", "--min-rate", "1"), "--slo-capacity needs --max-rate"),
    (("--slo-capacity", "ttft:p99=1s", "--min-rate", "2", "--max-rate", "1"), "must be above min_rate"),
    (("--slo-capacity", "ttft:p99=1s", "--min-rate", "1", "--max-rate", "2", "--up-to", "2"),
     "--up-to: do not apply to --slo-capacity"),
    (("--sweep", "3", "--attainment", "0.9"), "--attainment: do not apply to --sweep"),
    (("--concurrency", "2", "--max-probes", "3"), "--max-probes: only apply to --sweep or --slo-capacity"),
])
def test_misplaced_flags_are_usage_errors(extra, message, capsys):
    code = main(["bench", "--url", "http://127.0.0.1:9", "--model", "m", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_sweep_and_rate_are_exclusive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--sweep", "3", "--rate", "2"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
