"""Issue acceptance: the scraper, run against the simulator during a benchmark, captures a KV-usage
series that rises under load and falls after it, and the active window brackets the load."""

from __future__ import annotations

import time

import pytest

from benchflow import stats
from benchflow.loadgen import run_load
from benchflow.metrics.prometheus import PrometheusScraper
from benchflow.metrics.samples import series
from benchflow.spec import ConcurrencyLoad
from benchflow.workload import parse_dataset
from tests.support import wait_for_async
from tests.support.sim_process import SimServer

pytestmark = pytest.mark.integration


@pytest.fixture
def small_kv_sim():
    # 0.25 of a simulated 80 GiB H100 leaves ~3 GiB of KV cache for an 8B model: 32 requests of
    # 576 tokens fill most of it.
    server = SimServer("--gpu-memory-utilization", "0.25", "--time-scale", "0.5")
    yield server
    server.stop()


async def test_kv_usage_rises_under_load_and_falls_after(small_kv_sim):
    """Which samples count as before or after the load is decided by the scraper's own poll
    order, not by time margins: polls finished before the load started saw an idle server, and
    polls that started after the load ended must see the KV cache free (a loaded machine only
    makes each poll slower)."""
    url = small_kv_sim.url
    scraper = PrometheusScraper.for_endpoint(url, interval_s=0.1)
    prompts = parse_dataset("D(512,64)").generate(64, seed=1)
    async with scraper.running():
        await wait_for_async(lambda: len(scraper.polls) >= 3, timeout_s=30, what="three scrapes of the idle server")
        idle_polls = len(scraper.polls)
        load_start = time.perf_counter_ns()
        run = await run_load(url, "sim-model", prompts, ConcurrencyLoad(concurrency=32), max_requests=64)
        load_end = time.perf_counter_ns()
        # the poll after this index may have been in flight at load_end; every later one started after it
        done_polls = len(scraper.polls)
        await wait_for_async(lambda: len(scraper.polls) >= done_polls + 4, timeout_s=30,
                             what="three scrapes started after the load")
    assert sum(r.succeeded for r in run.records) == 64
    assert not scraper.gaps, "no failed scrape against a healthy simulator"
    last_idle_ns = scraper.polls[idle_polls - 1].when.t_ns
    first_after_ns = scraper.polls[done_polls + 1].when.t_ns
    t_ns, usage = series(scraper.frame(), "vllm:kv_cache_usage_perc")
    before = [v for t, v in zip(t_ns, usage) if t <= last_idle_ns]
    during = [v for t, v in zip(t_ns, usage) if load_start <= t <= load_end]
    after = [v for t, v in zip(t_ns, usage) if t >= first_after_ns]
    assert len(before) >= 3 and max(before) == 0.0
    assert during and max(during) > 0.5, f"KV usage under load peaked at {max(during):.2f}"
    assert len(after) >= 3 and max(after) == 0.0, "KV cache is freed once the load ends"
    window = stats.active_window(t_ns, usage, threshold=0.5)
    assert window is not None
    assert last_idle_ns < window[0] <= load_end and load_start <= window[1] < first_after_ns, \
        "the active window brackets the load"
