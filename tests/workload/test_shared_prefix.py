"""The shared-prefix dataset ``P(groups,prefix)/(suffix,output)`` and its effect with prefix caching."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchflow.errors import SpecError
from benchflow.loadgen import run_load
from benchflow.sim.config import load_sim_config
from benchflow.sim.server import running_sim
from benchflow.sim.virtual import VirtualRequest, run_closed_loop
from benchflow.spec import ConcurrencyLoad
from benchflow.spec.models import WorkloadSpec
from benchflow.stats import summarize
from benchflow.workload import SharedPrefix, parse_dataset, parse_notation
from tests.sim.helpers import engine_config


def test_notation_round_trips_and_generates_groups_of_common_prefixes():
    d = parse_notation(" P( 4 , 64 ) / ( 8 , 16 ) ")
    assert d == SharedPrefix(4, 64, 8, 16) and str(d) == "P(4,64)/(8,16)"
    prompts = d.generate(40, seed=3)
    assert prompts == d.generate(40, seed=3)
    assert all(p.input_tokens == 72 and len(p.text.split()) == 72 and p.max_tokens == 16 for p in prompts)
    prefixes = {" ".join(p.text.split()[:64]) for p in prompts}
    assert len(prefixes) == 4
    assert len({" ".join(p.text.split()[64:]) for p in prompts}) == 40  # unique suffixes


@pytest.mark.parametrize("text, words", [
    ("P(4,64)", "malformed"), ("P(0,64)/(8,16)", ">= 1"), ("P(4,0)/(8,16)", ">= 1"),
    ("P(4,64)/(0,16)", ">= 1"), ("P(4,64)/(8,0)", ">= 1"), ("P(2.5,64)/(8,16)", "whole number"),
    ("P(20000,64)/(8,16)", "at most 10,000 groups"), ("P(10000,2000000)/(8,16)", "groups x prefix"),
    ("P(4,-64)/(8,16)", ">= 1"),
])
def test_bad_notation_is_rejected_with_the_reason(text, words):
    with pytest.raises(SpecError) as e:
        parse_dataset(text)
    assert words in str(e.value)


def test_the_spec_accepts_it_as_a_dataset():
    w = WorkloadSpec.model_validate({"dataset": "P(2,32)/(4,4)", "load_points": [{"concurrency": 2}],
                                     "max_requests": 4})
    assert w.measurement_fields()["dataset"] == "P(2,32)/(4,4)"
    with pytest.raises(ValueError, match="P\\(groups,prefix\\)"):
        WorkloadSpec.model_validate({"dataset": "P(2,32)", "load_points": [{"concurrency": 2}]})


def _virtual(on: bool):
    prompts = SharedPrefix(4, 1024, 64, 8).generate(64, seed=1)
    reqs = [VirtualRequest(p.input_tokens, p.max_tokens, tokens=tuple(p.text.split())) for p in prompts]
    return run_closed_loop(engine_config(**{"enable-prefix-caching": on}), reqs, concurrency=4)


def test_virtual_prefix_caching_cuts_ttft_only_when_on():
    on, off = _virtual(True), _virtual(False)
    assert off.prefix_cache_hits == 0
    assert on.prefix_cache_hits >= (64 - 4 - 4) * 1024  # all but the first of each group (+ concurrent firsts)
    assert on.percentile("ttft_s", 50) < 0.6 * off.percentile("ttft_s", 50)


async def _http_run(on: bool):
    cfg = load_sim_config({"port": 0, "model": "sim", "enable_prefix_caching": on})
    prompts = SharedPrefix(2, 3000, 16, 4).generate(24, seed=2)
    async with running_sim(cfg) as sim:
        run = await run_load(sim.base_url, "sim", prompts, ConcurrencyLoad(concurrency=2))
        async with aiohttp.ClientSession() as s, s.get(sim.base_url + "/metrics") as r:
            text = await r.text()
    hits = next(smp.value for fam in text_string_to_metric_families(text) for smp in fam.samples
                if smp.name == "vllm:prefix_cache_hits_total")
    return summarize(run), hits


@pytest.mark.integration
async def test_http_shared_prefix_with_caching_shows_hits_and_lower_ttft():
    on, hits_on = await _http_run(True)
    off, hits_off = await _http_run(False)
    assert on["completed"] == off["completed"] == 24
    assert hits_on >= 20 * 2992 and hits_off == 0
    assert on["ttft_ms"]["p50"] < off["ttft_ms"]["p50"]
