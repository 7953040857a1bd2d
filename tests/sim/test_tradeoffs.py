"""The trade-offs the simulator must show, in virtual time (deterministic, no sleeps)."""

from __future__ import annotations

import numpy as np
import pytest

from benchflow.errors import BackendStartError
from benchflow.sim.config import OOM_MESSAGE, build_engine_config, load_sim_config
from benchflow.sim.virtual import VirtualRequest, run_closed_loop

from .helpers import engine_config


def _requests(n: int, prompt: tuple[int, int], output: tuple[int, int], seed: int = 1) -> list[VirtualRequest]:
    rng = np.random.default_rng(seed)
    return [VirtualRequest(int(p), int(o)) for p, o in zip(rng.integers(*prompt, n), rng.integers(*output, n))]


SHORT = _requests(400, (100, 300), (50, 150))
LONG = _requests(300, (400, 800), (200, 400))


def test_throughput_rises_with_max_num_seqs_while_the_cache_has_room():
    runs = [run_closed_loop(engine_config(**{"max-num-seqs": m}), SHORT, concurrency=128) for m in (4, 8, 16, 32, 64)]
    throughput = [r.output_throughput for r in runs]
    assert throughput == sorted(throughput)
    assert throughput[-1] > 3 * throughput[0]
    assert all(r.num_preemptions == 0 for r in runs)


def test_throughput_saturates_once_the_kv_cache_is_full_and_preemption_starts():
    small_kv = {"gpu-memory-utilization": 0.25}  # about 26k KV tokens
    runs = {m: run_closed_loop(engine_config(**small_kv, **{"max-num-seqs": m}), LONG, concurrency=256)
            for m in (16, 64, 256)}
    assert runs[16].num_preemptions == 0
    assert runs[64].num_preemptions > 0 and runs[256].num_preemptions > 0
    assert runs[64].max_kv_cache_usage > 0.95
    # past saturation, more sequences buy (almost) nothing
    assert runs[256].output_throughput < 1.05 * runs[64].output_throughput
    roomy = run_closed_loop(engine_config(**{"max-num-seqs": 256}), LONG, concurrency=256)
    assert roomy.output_throughput > 1.3 * runs[256].output_throughput


def test_latency_rises_with_batch_size():
    tpot = [run_closed_loop(engine_config(**{"max-num-seqs": m}), SHORT, concurrency=m).percentile("tpot_s", 50)
            for m in (1, 8, 32, 128)]
    assert tpot == sorted(tpot)
    assert tpot[-1] > 2 * tpot[0]
    # the default profile's single-sequence decode step is about 8 ms (docs/simulator.md)
    assert 0.008 < tpot[0] < 0.0095


def test_small_gpu_memory_utilization_means_more_preemption_and_less_throughput():
    knobs = {"max-num-seqs": 128}
    tight = run_closed_loop(engine_config(**knobs, **{"gpu-memory-utilization": 0.25}), LONG, concurrency=128)
    roomy = run_closed_loop(engine_config(**knobs, **{"gpu-memory-utilization": 0.9}), LONG, concurrency=128)
    assert tight.num_preemptions > 0 == roomy.num_preemptions
    assert tight.output_throughput < 0.85 * roomy.output_throughput


@pytest.mark.parametrize("util", [0.1, 0.2])
def test_too_small_gpu_memory_utilization_fails_like_vllm(util):
    with pytest.raises(BackendStartError) as e:
        build_engine_config(load_sim_config({}, {"gpu-memory-utilization": util}))
    assert str(e.value) == OOM_MESSAGE


def test_a_cache_smaller_than_max_model_len_fails_like_vllm():
    with pytest.raises(BackendStartError, match=r"max seq len \(8192\) is larger than the maximum number of tokens"):
        build_engine_config(load_sim_config({}, {"gpu-memory-utilization": 0.22}))
    assert build_engine_config(load_sim_config({}, {"gpu-memory-utilization": 0.22, "max-model-len": 2048}))


def test_slo_goodput_has_an_interior_optimum_in_max_num_seqs():
    """At a fixed concurrency, few sequences make requests queue (TTFT), many make steps slow
    (TPOT): the goodput under a TTFT + TPOT SLO peaks in between, which tuning must find."""
    slo = {"ttft_s": 1.0, "tpot_s": 0.020}
    sweep = (8, 16, 32, 48, 64, 96)
    goodput = {m: run_closed_loop(engine_config(**{"max-num-seqs": m}), SHORT, concurrency=64).goodput(slo)
               for m in sweep}
    best = max(goodput, key=goodput.get)
    assert best not in (sweep[0], sweep[-1]), goodput
    assert goodput[best] > 2 * max(goodput[sweep[0]], goodput[sweep[-1]]), goodput
