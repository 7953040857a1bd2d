"""The HTTP server in-process (real aiohttp server on 127.0.0.1): wire format, metrics, faults."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchflow.sim import runner
from benchflow.sim.config import load_sim_config
from benchflow.sim.server import running_sim
from tests.support import wait_for_async

pytestmark = pytest.mark.integration


def _config(**knobs):
    return load_sim_config({"port": 0, "time_scale": 0.1, "model": "sim-8b", **knobs})


async def _sse(resp: aiohttp.ClientResponse) -> list[str]:
    """The data payloads of an SSE response, in order."""
    body = (await resp.read()).decode()
    assert body.endswith("\n\n")
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


async def _metrics(session, url) -> dict:
    async with session.get(url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_streaming_completion_sends_one_token_per_message_then_usage_then_done():
    async with running_sim(_config()) as sim, aiohttp.ClientSession() as s:
        body = {"model": "sim-8b", "prompt": "w " * 12, "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}}
        async with s.post(sim.base_url + "/v1/completions", json=body) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            payloads = await _sse(r)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    tokens, usage = chunks[:-1], chunks[-1]
    assert len(tokens) == 5 and all(len(c["choices"][0]["text"].split()) == 1 for c in tokens)
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 4 + ["length"]
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 12, "completion_tokens": 5,
                                                         "total_tokens": 17}


async def test_streaming_chat_starts_with_a_role_only_delta_and_usage_is_optional():
    async with running_sim(_config()) as sim, aiohttp.ClientSession() as s:
        body = {"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3, "stream": True}
        async with s.post(sim.base_url + "/v1/chat/completions", json=body) as r:
            payloads = await _sse(r)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] != "" for c in chunks[1:]] == [True] * 3
    assert all(c["choices"] for c in chunks)  # no usage-only chunk when not asked for


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "a b c", "max_tokens": 4}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 4}),
])
async def test_non_streaming_returns_the_whole_text_and_usage(path, body):
    async with running_sim(_config()) as sim, aiohttp.ClientSession() as s:
        async with s.post(sim.base_url + path, json=body) as r:
            assert r.status == 200
            data = await r.json()
    choice = data["choices"][0]
    text = choice["message"]["content"] if "chat" in path else choice["text"]
    assert len(text.split()) == 4 and choice["finish_reason"] == "length"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_models_and_health():
    async with running_sim(_config(served_model_name="public-name")) as sim, aiohttp.ClientSession() as s:
        async with s.get(sim.base_url + "/v1/models") as r:
            models = await r.json()
        async with s.get(sim.base_url + "/health") as r:
            assert r.status == 200
    assert [m["id"] for m in models["data"]] == ["public-name"]
    assert models["data"][0]["max_model_len"] == 8192


@pytest.mark.parametrize("knobs, body, status, message", [
    ({}, {"model": "other", "prompt": "a"}, 404, "The model `other` does not exist."),
    ({"max_model_len": 32}, {"prompt": "a " * 30, "max_tokens": 8}, 400, "maximum context length is 32 tokens"),
    ({}, {"prompt": "a", "priority": 1}, 400, "Priority scheduling is not enabled"),
    ({"enable_chunked_prefill": False, "max_num_batched_tokens": 16, "max_model_len": 64},
     {"prompt": "a " * 20, "max_tokens": 2}, 400, "Input prompt (20 tokens) is too long"),
])
async def test_bad_requests_get_vllms_error_json(knobs, body, status, message):
    async with running_sim(_config(**knobs)) as sim, aiohttp.ClientSession() as s:
        async with s.post(sim.base_url + "/v1/completions", json=body) as r:
            data = await r.json()
    assert r.status == status and data["object"] == "error" and data["code"] == status
    assert message in data["message"]


async def test_metrics_use_vllm_names_types_and_the_model_label():
    async with running_sim(_config()) as sim, aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post(sim.base_url + "/v1/completions", json={"prompt": "a b c d", "max_tokens": 6}) as r:
                assert r.status == 200
        families = await _metrics(s, sim.base_url)
    types = {name: f.type for name, f in families.items()}
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert types[gauge] == "gauge"
    for counter in ("vllm:prompt_tokens", "vllm:generation_tokens", "vllm:num_preemptions"):
        assert types[counter] == "counter"  # exposed as <name>_total
    for hist in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:e2e_request_latency_seconds", "vllm:request_time_per_output_token_seconds"):
        assert types[hist] == "histogram"
    samples = {s.name: s for f in families.values() for s in f.samples if not s.name.endswith("_bucket")}
    assert samples["vllm:prompt_tokens_total"].value == 12
    assert samples["vllm:generation_tokens_total"].value == 18
    assert samples["vllm:time_to_first_token_seconds_count"].value == 3
    assert samples["vllm:inter_token_latency_seconds_count"].value == 15
    assert samples["vllm:num_requests_running"].value == 0
    assert all(s.labels.get("model_name") == "sim-8b" for f in families.values() for s in f.samples)


async def _samples(session, url) -> dict[str, float]:
    return {x.name: x.value for f in (await _metrics(session, url)).values() for x in f.samples}


async def test_gauges_show_running_waiting_and_kv_usage_during_load():
    # 2000 output tokens take the two running requests ~16 s, so all five are in the server (two
    # running, three waiting) long before the first finishes, however slowly the requests arrive.
    async with running_sim(_config(max_num_seqs=2, time_scale=1.0)) as sim, aiohttp.ClientSession() as s:
        body = {"prompt": "a " * 500, "max_tokens": 2000}
        tasks = [asyncio.create_task(s.post(sim.base_url + "/v1/completions", json=body)) for _ in range(5)]

        async def all_five_arrived():
            samples = await _samples(s, sim.base_url)
            return samples if samples["vllm:num_requests_waiting"] == 3 else None

        try:
            samples = await wait_for_async(all_five_arrived, timeout_s=15, interval_s=0.05,
                                           what="three requests waiting behind max_num_seqs=2")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert samples["vllm:num_requests_running"] == 2
    assert 0 < samples["vllm:kv_cache_usage_perc"] < 1


async def test_a_client_that_goes_away_frees_its_slot():
    async with running_sim(_config(time_scale=1.0)) as sim, aiohttp.ClientSession() as s:
        body = {"prompt": "a b", "max_tokens": 2000, "stream": True}
        async with s.post(sim.base_url + "/v1/completions", json=body) as r:
            await r.content.readline()
        await wait_for_async(lambda: not sim.server.engine.has_work, timeout_s=15,
                             what="the engine to drop the abandoned request")
        assert sim.server.engine.used_blocks == 0


async def test_startup_delay_answers_503_loading_then_serves():
    # The delay only has to outlast two in-process requests; then the test polls, it never sleeps.
    async with running_sim(_config(startup_delay_s=1.5)) as sim, aiohttp.ClientSession() as s:
        async with s.get(sim.base_url + "/health") as r:
            assert (r.status, await r.text()) == (503, "loading")
        async with s.post(sim.base_url + "/v1/completions", json={"prompt": "a"}) as r:
            assert r.status == 503

        async def healthy() -> bool:
            async with s.get(sim.base_url + "/health") as r:
                return r.status == 200

        await wait_for_async(healthy, timeout_s=15, interval_s=0.05, what="/health to answer 200")
        async with s.post(sim.base_url + "/v1/completions", json={"prompt": "a"}) as r:
            assert r.status == 200


async def test_stall_after_n_requests_makes_streams_hang():
    async with running_sim(_config(stall_after=1)) as sim, aiohttp.ClientSession() as s:
        body = {"prompt": "a", "max_tokens": 3, "stream": True}
        async with s.post(sim.base_url + "/v1/completions", json=body) as r:
            assert (await _sse(r))[-1] == "[DONE]"
        async with s.post(sim.base_url + "/v1/completions", json=body) as r:
            assert r.status == 200  # headers come, tokens never do
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r.content.readline(), timeout=0.5)
        async with s.get(sim.base_url + "/health") as r:
            assert r.status == 200  # a hung engine still looks healthy


async def _statuses(error_rate: float, seed: int, n: int = 40) -> list[int]:
    async with running_sim(_config(error_rate=error_rate, seed=seed)) as sim, aiohttp.ClientSession() as s:
        out = []
        for _ in range(n):
            async with s.post(sim.base_url + "/v1/completions", json={"prompt": "a", "max_tokens": 1}) as r:
                if r.status == 500:
                    assert (await r.json())["type"] == "InternalServerError"
                out.append(r.status)
        return out


async def test_error_rate_answers_a_seeded_fraction_with_500():
    first = await _statuses(0.5, seed=7)
    assert first == await _statuses(0.5, seed=7)
    assert 8 <= first.count(500) <= 32 and set(first) == {200, 500}
    assert first != await _statuses(0.5, seed=8)
    assert set(await _statuses(0.0, seed=7, n=10)) == {200}


async def test_priority_policy_serves_the_lower_priority_value_first():
    async with running_sim(_config(max_num_seqs=1, scheduling_policy="priority")) as sim, \
            aiohttp.ClientSession() as s:
        finished: list[str] = []

        async def send(name: str, priority: int, max_tokens: int) -> None:
            body = {"prompt": "a b", "max_tokens": max_tokens, "priority": priority}
            async with s.post(sim.base_url + "/v1/completions", json=body) as r:
                assert r.status == 200
            finished.append(name)

        engine = sim.server.engine
        # The blocker's 2000 tokens (~1.6 s at time_scale 0.1) outlast the two arrivals below by far;
        # each arrival is awaited in the engine before the next is sent (no sleeps to tune).
        blocker = asyncio.create_task(send("blocker", 0, 2000))
        await wait_for_async(lambda: engine.num_running == 1, timeout_s=15, what="the blocker to run")
        late = [asyncio.create_task(send("background", 5, 2))]
        await wait_for_async(lambda: engine.num_waiting == 1, timeout_s=15, what="background to queue")
        late.append(asyncio.create_task(send("urgent", -5, 2)))
        await wait_for_async(lambda: engine.num_waiting == 2 or blocker.done(), timeout_s=15,
                             what="urgent to queue")
        assert not blocker.done(), "the blocker finished before both late requests were queued"
        await asyncio.gather(blocker, *late)
    assert finished == ["blocker", "urgent", "background"]


async def test_falling_behind_real_time_is_logged_with_the_amount(caplog, monkeypatch):
    # A warning threshold of 250 ms: a loaded machine's incidental stalls stay under it, the
    # deliberate 0.6 s block below does not. Whichever lag is logged first, it exceeds the threshold,
    # and every later one within LAG_LOG_INTERVAL_S (5 s, longer than this test) is rate-limited.
    monkeypatch.setattr(runner, "LAG_WARN_S", 0.25)
    caplog.set_level(logging.WARNING, logger="benchflow.sim")
    async with running_sim(_config(time_scale=1.0)) as sim, aiohttp.ClientSession() as s:
        body = {"prompt": "a", "max_tokens": 40, "stream": True}
        async with s.post(sim.base_url + "/v1/completions", json=body) as r:
            await r.content.readline()
            time.sleep(0.6)  # deliberately block the event loop: the step loop cannot keep up
            assert (await r.read()).endswith(b"data: [DONE]\n\n")
    lag = [rec.getMessage() for rec in caplog.records if "fell behind real time" in rec.getMessage()]
    assert len(lag) == 1, lag  # rate-limited
    assert float(re.search(r"by up to ([\d.]+) ms", lag[0]).group(1)) > 250


async def test_preemptions_are_counted_when_the_kv_cache_overflows():
    knobs = {"gpu_memory_utilization": 0.22, "max_model_len": 4096, "time_scale": 0.01}  # ~6.8k KV tokens
    async with running_sim(_config(**knobs)) as sim, aiohttp.ClientSession() as s:
        async def one() -> int:
            async with s.post(sim.base_url + "/v1/completions", json={"prompt": "w " * 1000, "max_tokens": 1500}) as r:
                return (await r.json())["usage"]["completion_tokens"]

        assert await asyncio.gather(*(one() for _ in range(4))) == [1500] * 4
        samples = {x.name: x.value for f in (await _metrics(s, sim.base_url)).values() for x in f.samples}
    assert samples["vllm:num_preemptions_total"] > 0
    assert samples["vllm:generation_tokens_total"] == 6000
