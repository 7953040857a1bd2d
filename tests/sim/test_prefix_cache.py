"""Prefix caching in the simulator (``enable-prefix-caching``): block accounting, TTFT, metrics."""

from __future__ import annotations

import statistics

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchflow.sim.config import load_sim_config
from benchflow.sim.engine import Engine, Sequence
from benchflow.sim.prefix_cache import block_hashes
from benchflow.sim.server import running_sim
from benchflow.sim.virtual import VirtualRequest, run_closed_loop
from tests.sim.helpers import engine_config, tiny_config


def _shared_prefix_requests(n: int, prefix: int = 1024, suffix: int = 32) -> list[VirtualRequest]:
    common = tuple(f"p{i}" for i in range(prefix))
    return [VirtualRequest(prefix + suffix, 8, tokens=common + tuple(f"r{k}s{i}" for i in range(suffix)))
            for k in range(n)]


def test_block_hashes_are_chained_and_cover_full_blocks_only():
    a = block_hashes(list("abcdefghij"), 4)
    assert len(a) == 2
    assert block_hashes(list("abcdXXXXij"), 4)[0] == a[0]
    assert block_hashes(list("abcdXXXXij"), 4)[1] != a[1]
    assert block_hashes(list("Xbcdefgh"), 4)[1] != a[1]  # same block content, other parent


@pytest.mark.parametrize("on", [True, False])
def test_repeated_prefix_cuts_ttft_and_counts_hits_only_with_caching_on(on):
    reqs = _shared_prefix_requests(20)
    run = run_closed_loop(engine_config(**{"enable-prefix-caching": on}), reqs, concurrency=1)
    base = run_closed_loop(engine_config(), reqs, concurrency=1)
    assert len(run.requests) == 20
    ttft = [r.ttft_s for r in run.requests]
    if on:
        # the first request computes everything; the next 19 find the 1024-token prefix cached
        assert run.prefix_cache_hits == 19 * 1024
        assert run.prefix_cache_queries == 20 * (1024 + 32)
        assert statistics.median(ttft[1:]) < 0.5 * ttft[0]
        assert run.percentile("ttft_s", 50) < 0.5 * base.percentile("ttft_s", 50)
    else:
        assert run.prefix_cache_hits == run.prefix_cache_queries == 0
        assert [r.ttft_s for r in run.requests] == [r.ttft_s for r in base.requests]


def test_identical_prompt_still_computes_its_last_token():
    cfg = tiny_config(enable_prefix_caching=True)
    eng = Engine(cfg)
    toks = tuple(range(16))
    for rid in ("a", "b"):
        eng.add(Sequence(rid, 16, 2, block_hashes=block_hashes(toks, cfg.block_size)))
        while eng.has_work:
            eng.step()
    assert eng.prefix_cache.hits == 12  # 3 of 4 blocks: the last block is recomputed
    assert eng.used_blocks == 0


def test_concurrent_sharers_share_blocks_and_everything_is_freed():
    cfg = tiny_config(enable_prefix_caching=True, num_gpu_blocks=16, max_num_seqs=4)
    eng = Engine(cfg)
    common = tuple(range(12))
    eng.add(Sequence("first", 16, 4, block_hashes=block_hashes(common + (100, 101, 102, 103), 4)))
    eng.step()  # computes and registers the first's prompt blocks
    for k in range(3):
        toks = common + tuple(200 + 10 * k + i for i in range(4))
        eng.add(Sequence(f"s{k}", 16, 2, block_hashes=block_hashes(toks, 4)))
    eng.step()
    # unshared: 5 blocks (first, decoding) + 3 x 4 = 17 > 16; shared: 3 common + 2 + 3 x 1 private
    assert eng.num_running == 4 and eng.used_blocks == 3 + 2 + 3
    assert eng.prefix_cache.hits == 3 * 12
    while eng.has_work:
        eng.step()
    assert eng.used_blocks == 0


def test_cached_blocks_are_evicted_lru_within_the_kv_capacity():
    cfg = tiny_config(enable_prefix_caching=True, num_gpu_blocks=8, max_num_seqs=1)
    eng = Engine(cfg)
    for k in range(30):  # 30 distinct 16-token prompts: far more blocks than the cache holds
        toks = tuple(1000 * k + i for i in range(16))
        eng.add(Sequence(f"r{k}", 16, 1, block_hashes=block_hashes(toks, 4)))
        while eng.has_work:
            eng.step()
            assert eng.prefix_cache.num_cached_free <= cfg.num_gpu_blocks - eng.used_blocks
    assert eng.prefix_cache.hits == 0
    # the most recent prompt is still cached, the oldest is not
    for rid, k, hit in (("again-new", 29, 12), ("again-old", 0, 0)):
        before = eng.prefix_cache.hits
        eng.add(Sequence(rid, 16, 1, block_hashes=block_hashes(tuple(1000 * k + i for i in range(16)), 4)))
        while eng.has_work:
            eng.step()
        assert eng.prefix_cache.hits - before == hit


def test_engine_arg_and_flag_parse():
    assert load_sim_config({}, {"enable-prefix-caching": "true"}).enable_prefix_caching is True
    assert load_sim_config({}).enable_prefix_caching is False


async def _ttft_and_metrics(on: bool) -> tuple[list[float], dict[str, float]]:
    import time
    cfg = load_sim_config({"port": 0, "time_scale": 1.0, "model": "sim-8b", "enable_prefix_caching": on})
    prefix = " ".join(f"p{i}" for i in range(4000))
    ttfts = []
    async with running_sim(cfg) as sim, aiohttp.ClientSession() as s:
        for k in range(6):
            body = {"model": "sim-8b", "prompt": f"{prefix} unique{k} tail{k}", "max_tokens": 2, "stream": True}
            t0 = time.perf_counter()
            async with s.post(sim.base_url + "/v1/completions", json=body) as r:
                assert r.status == 200
                await r.content.readline()
                ttfts.append(time.perf_counter() - t0)
                await r.read()
        async with s.get(sim.base_url + "/metrics") as r:
            text = await r.text()
    values = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name.startswith("vllm:prefix_cache"):
                values[sample.name] = sample.value
    return ttfts, values


@pytest.mark.integration
async def test_http_prefix_caching_shows_hits_and_a_ttft_drop():
    ttft_on, m_on = await _ttft_and_metrics(True)
    assert m_on["vllm:prefix_cache_queries_total"] == 6 * 4002
    assert m_on["vllm:prefix_cache_hits_total"] == 5 * (4000 // 16) * 16
    ttft_off, m_off = await _ttft_and_metrics(False)
    assert m_off["vllm:prefix_cache_hits_total"] == 0 and m_off["vllm:prefix_cache_queries_total"] == 0
    # 4000 prefill tokens are skipped: the simulated cost drops several-fold (medians, busy machine)
    assert statistics.median(ttft_on[1:]) < statistics.median(ttft_off[1:])
