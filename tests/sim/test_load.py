"""The simulator under load over real HTTP, measured by benchflow's own load generator."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchflow.records import Prompt
from benchflow.spec import ConcurrencyLoad

from .helpers import BENCHFLOW_CMD, sim_process

pytestmark = pytest.mark.integration


def histogram_quantile(metrics_text: str, name: str, q: float) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    buckets = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name == name:
            buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
    assert buckets, f"{name} not exposed"
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    raise AssertionError("unreachable")


def histogram_mean(metrics_text: str, name: str) -> float:
    """A histogram's exact mean: its _sum over its _count."""
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics_text) if f.name == name
               for s in f.samples}
    assert samples.get(name + "_count"), f"{name} not exposed or empty"
    return samples[name + "_sum"] / samples[name + "_count"]


def _scrape(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as r:
        return r.read().decode()


def _prompts(n: int, input_tokens: int, output_tokens: int) -> list[Prompt]:
    return [Prompt(" ".join(f"w{i}" for i in range(input_tokens)), input_tokens, output_tokens)] * n


def test_benchflow_bench_and_the_server_agree_on_ttft_and_tpot_at_concurrency_64(tmp_path):
    """`benchflow sim --engine-arg max-num-seqs=8`, then `benchflow bench` at concurrency 64: the
    client's TTFT, TPOT, ITL and E2E agree with the server's own histograms."""
    out = tmp_path / "bench.json"
    with sim_process("--engine-arg", "max-num-seqs=8", "--model", "sim", cmd=[*BENCHFLOW_CMD, "sim"]) as sim:
        bench = subprocess.run(
            [*BENCHFLOW_CMD, "bench", "--url", sim.base_url, "--model", "sim", "--dataset", "D(64,24)",
             "--concurrency", "64", "--requests", "128", "--timeout", "30", "--json", str(out)],
            capture_output=True, text=True, timeout=120)
        text = _scrape(sim.base_url)
    assert bench.returncode == 0, bench.stderr
    summary = json.loads(out.read_text())
    assert summary["completed"] == 128 and not summary["errors"]
    # Both sides time the same tokens, but the client also sees connection set-up and delivery
    # delays, which a loaded machine makes longer and burstier. So: TTFT and E2E medians (server side
    # interpolated in its histogram) within 15% (measured: up to 5% and 7% at load average 11), and
    # TPOT and ITL as means (the server's exact sum/count, where delivery jitter cancels out) within
    # 5% (measured: up to 1.4%; the ITL median moved 11% once). Still caught: a metric defined
    # differently (seconds for ms, queueing left out of TTFT, the first token counted in TPOT).
    for metric, hist in (("ttft_ms", "vllm:time_to_first_token_seconds"),
                         ("e2e_ms", "vllm:e2e_request_latency_seconds")):
        assert summary[metric]["p50"] == pytest.approx(1e3 * histogram_quantile(text, hist, 0.5), rel=0.15), metric
    for metric, hist in (("tpot_ms", "vllm:request_time_per_output_token_seconds"),
                         ("itl_ms", "vllm:inter_token_latency_seconds")):
        assert summary[metric]["mean"] == pytest.approx(1e3 * histogram_mean(text, hist), rel=0.05), metric
    # queueing behind max-num-seqs=8 dominates the TTFT. A decode step is ~8 ms; a loaded machine
    # only makes steps longer (a late first token can shorten a request's average gap by at most
    # 50 ms / 23), so there is only a lower bound here: tests/sim/test_tradeoffs.py checks the step
    # model's figure in virtual time.
    assert summary["ttft_ms"]["p50"] > 5 * summary["tpot_ms"]["p50"]
    assert summary["tpot_ms"]["p50"] > 6.0


async def _throughput(max_num_seqs: int) -> float:
    from benchflow.loadgen import run_load
    from benchflow.stats import summarize

    # time-scale 3: the simulated steps are slow enough that the CPU (client and server in Python)
    # limits the 64-sequence run less on a loaded machine
    with sim_process("--max-num-seqs", str(max_num_seqs), "--time-scale", "3", "--model", "sim") as sim:
        run = await run_load(sim.base_url, "sim", _prompts(64, 16, 16), ConcurrencyLoad(concurrency=64),
                             request_timeout_s=60)
    summary = summarize(run)
    assert summary["completed"] == 64
    return summary["output_throughput"]


async def test_throughput_with_64_sequences_is_clearly_higher_than_with_8():
    # The step model (virtual time) gives 4.2x for this workload. Measured: 2.9-3.1x at load average 7
    # and 2.3-2.6x at 11 on a 2-core machine (the CPU limits the 64-sequence run). A server that
    # ignored max-num-seqs would give about 1x.
    assert await _throughput(64) > 1.5 * await _throughput(8)
