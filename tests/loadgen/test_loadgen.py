"""The load generator against the streaming test server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiohttp import web

from benchflow.errors import EndpointUnreachableError, SpecError
from benchflow.loadgen import api_root, build_body, check_endpoint, run_load, run_load_sync
from benchflow.records import Prompt
from benchflow.spec import ConcurrencyLoad, RateLoad
from tests.support import free_port
from tests.support.stream_server import StreamServer, StreamServerConfig, serve_in_thread

pytestmark = pytest.mark.integration

FAST = dict(ttft_s=0.002, gap_s=0.001)


def _prompts(n: int = 5, max_tokens: int = 4) -> list[Prompt]:
    return [Prompt(text=" ".join(["w"] * (3 + i)), input_tokens=3 + i, max_tokens=max_tokens) for i in range(n)]


def _max_in_flight(records) -> int:
    events = sorted([(r.start_ns, 1) for r in records] + [(r.end_ns, -1) for r in records], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


async def test_request_body_follows_the_contract():
    srv = StreamServer(StreamServerConfig(**FAST, record_bodies=True))
    async with srv as url:
        await run_load(url, "my-model", _prompts(1, 4), ConcurrencyLoad(concurrency=1), max_requests=1,
                       temperature=0.5, extra_body={"top_p": 0.9, "temperature": 0.7})
        await run_load(url, "my-model", _prompts(1, 4), ConcurrencyLoad(concurrency=1), max_requests=1,
                       api="chat", ignore_eos=False)
    completion, chat = srv.bodies
    assert completion == {
        "model": "my-model", "prompt": "w w w", "max_tokens": 4, "temperature": 0.7, "stream": True,
        "stream_options": {"include_usage": True}, "ignore_eos": True, "min_tokens": 4, "top_p": 0.9,
    }
    assert chat["messages"] == [{"role": "user", "content": "w w w"}]
    assert "ignore_eos" not in chat and "min_tokens" not in chat and "prompt" not in chat


def test_build_body_uses_prompt_messages_and_api_root_normalises():
    p = Prompt(text="ignored", input_tokens=2, max_tokens=3, messages=({"role": "system", "content": "s"},
                                                                     {"role": "user", "content": "u"}))
    assert build_body("m", p, api="chat")["messages"] == [{"role": "system", "content": "s"},
                                                           {"role": "user", "content": "u"}]
    assert api_root("http://h:8000/v1/") == api_root("http://h:8000/") == "http://h:8000"


@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_closed_loop_records_warmup_usage_and_chunks(api):
    srv = StreamServer(StreamServerConfig(**FAST, tokens_per_message=2, keepalive=True))
    async with srv as url:
        run = await run_load(url, "m", _prompts(3, max_tokens=6), ConcurrencyLoad(concurrency=2),
                             api=api, warmup_requests=2, max_requests=5)
    assert run.mode == "closed" and run.concurrency == 2 and run.stop_reason == "max_requests"
    assert len(run.records) == 7
    assert [r.warmup for r in sorted(run.records, key=lambda r: r.request_id)] == [True] * 2 + [False] * 5
    assert all(r.succeeded for r in run.records)
    for r in run.records:
        assert len(r.chunks) == 3  # 6 tokens, 2 per message; the chat role message is not output
        assert r.completion_tokens == 6
        assert r.start_ns < r.chunks[0][0] <= r.chunks[-1][0] <= r.end_ns
        assert r.scheduled_ns is None
    # prompts are cycled: 7 requests over 3 prompts, each request's own prompt length reported back
    assert Counter(r.input_tokens for r in run.records) == {3: 3, 4: 2, 5: 2}
    assert _max_in_flight(run.records) <= 2


async def test_concurrency_is_kept():
    async with StreamServer(StreamServerConfig(ttft_s=0.01, gap_s=0.002)) as url:
        run = await run_load(url, "m", _prompts(), ConcurrencyLoad(concurrency=4), max_requests=16)
    assert _max_in_flight(run.records) == 4


async def test_errors_are_data_with_their_class():
    behaviours = ("ok", "http_500", "http_400", "cut", "stall", "no_done", "empty", "stream_error")
    cfg = StreamServerConfig(**FAST, behaviours=behaviours, stall_s=5.0, cut_after=1)
    async with StreamServer(cfg) as url:
        run = await run_load(url, "m", _prompts(), ConcurrencyLoad(concurrency=1), max_requests=len(behaviours),
                             request_timeout_s=0.3)
    by_id = {r.request_id: r for r in run.records}
    got = [by_id[i].error_class for i in range(len(behaviours))]
    assert got == [None, "http_5xx", "http_4xx", "stream_interrupted", "timeout", "stream_interrupted",
                   "no_output", "http_5xx"]
    assert by_id[0].succeeded and not any(by_id[i].succeeded for i in range(1, len(behaviours)))
    assert "test server says 500" in by_id[1].error_message and by_id[1].status == 500
    assert by_id[2].status == 400 and len(by_id[2].error_message) <= 500
    assert len(by_id[3].chunks) == 1  # one message arrived before the cut
    assert all(r.end_ns is not None and not r.incomplete for r in run.records)


async def test_refused_connection_is_data():
    url = f"http://127.0.0.1:{free_port()}"
    run = await run_load(url, "m", _prompts(), ConcurrencyLoad(concurrency=2), max_requests=4)
    assert [r.error_class for r in run.records] == ["connection"] * 4
    assert all(r.status is None and "refused" in r.error_message.lower() for r in run.records)


async def test_long_http_error_body_is_truncated_to_500_characters():
    async def handler(request):
        return web.Response(status=503, text="x" * 5000)

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        run = await run_load(f"http://127.0.0.1:{port}", "m", _prompts(), ConcurrencyLoad(concurrency=1),
                             max_requests=1)
    finally:
        await runner.cleanup()
    (rec,) = run.records
    assert rec.error_class == "http_5xx" and rec.error_message == "x" * 500


async def test_duration_bound_cancels_in_flight_requests_as_incomplete():
    async with StreamServer(StreamServerConfig(ttft_s=0.01, gap_s=0.05, default_max_tokens=200)) as url:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        run = await run_load(url, "m", _prompts(max_tokens=200), ConcurrencyLoad(concurrency=3),
                             max_requests=100, max_duration_s=0.4)
        elapsed = loop.time() - t0
    assert run.stop_reason == "max_duration"
    assert len(run.records) == 3 and all(r.incomplete and not r.succeeded for r in run.records)
    assert all(r.error_class is None and r.end_ns is not None and r.chunks for r in run.records)
    assert elapsed < 5.0  # did not wait for the 10 s streams


async def test_open_loop_keeps_the_schedule():
    async with StreamServer(StreamServerConfig(**FAST)) as url:
        run = await run_load(url, "m", _prompts(), RateLoad(rate=50, arrival="constant"), max_requests=10,
                             warmup_requests=2)
    assert run.mode == "open" and run.target_rate == 50
    recs = sorted(run.records, key=lambda r: r.request_id)
    assert len(recs) == 12 and all(r.succeeded for r in recs)
    warm, measured = recs[:2], recs[2:]
    assert all(r.warmup and r.scheduled_ns is None for r in warm)  # a phase of its own, before the schedule
    t0 = measured[0].scheduled_ns
    assert [r.scheduled_ns - t0 for r in measured] == [i * 20_000_000 for i in range(10)]
    assert t0 >= max(r.end_ns for r in warm)
    assert all(r.start_ns >= r.scheduled_ns for r in measured)


async def test_open_loop_cap_delays_sends_and_lag_shows_it():
    async with StreamServer(StreamServerConfig(ttft_s=0.05, gap_s=0.01, default_max_tokens=5)) as url:
        run = await run_load(url, "m", _prompts(max_tokens=5), RateLoad(rate=200, arrival="constant",
                             max_concurrency=2), max_requests=8)
    assert run.concurrency == 2
    assert _max_in_flight(run.records) <= 2
    lags_ms = [(r.start_ns - r.scheduled_ns) / 1e6 for r in sorted(run.records, key=lambda r: r.request_id)]
    # requests 3..8 waited for a slot (each request takes ~90 ms; they were due every 5 ms)
    assert min(lags_ms[2:]) > 50


async def test_open_loop_duration_only():
    async with StreamServer(StreamServerConfig(**FAST)) as url:
        run = await run_load(url, "m", _prompts(), RateLoad(rate=100, arrival="constant"), max_duration_s=0.3)
    assert run.stop_reason == "max_duration"
    # Only requests due inside the 0.3 s were sent (at most 31); how many of them went out before
    # the bound depends on how busy the machine is, so that is not asserted.
    recs = sorted(run.records, key=lambda r: r.request_id)
    assert 1 <= len(recs) <= 31 and [r.request_id for r in recs] == list(range(len(recs)))
    assert all(r.scheduled_ns - recs[0].scheduled_ns <= 300_000_000 for r in recs)
    assert all(r.succeeded or r.incomplete for r in recs)


async def test_without_bounds_each_prompt_is_sent_once():
    async with StreamServer(StreamServerConfig(**FAST)) as url:
        run = await run_load(url, "m", _prompts(4), ConcurrencyLoad(concurrency=3))
    assert len(run.records) == 4 and run.stop_reason == "prompts"


async def test_run_load_sync_works_inside_a_running_loop():
    with serve_in_thread(StreamServerConfig(**FAST)) as srv:
        run = run_load_sync(srv.url, "m", _prompts(), ConcurrencyLoad(concurrency=1), max_requests=2)
    assert [r.succeeded for r in run.records] == [True, True]


@pytest.mark.parametrize("kwargs", [{"api": "embeddings"}, {"max_requests": 0}, {"warmup_requests": -1},
                                    {"max_duration_s": 0}, {"request_timeout_s": 0}])
async def test_invalid_arguments_are_spec_errors(kwargs):
    with pytest.raises(SpecError):
        await run_load("http://127.0.0.1:9", "m", _prompts(), ConcurrencyLoad(concurrency=1), **kwargs)
    with pytest.raises(SpecError):
        await run_load("http://127.0.0.1:9", "m", [], ConcurrencyLoad(concurrency=1))


async def test_check_endpoint():
    async with StreamServer(StreamServerConfig(**FAST)) as url:
        await check_endpoint(url, 2.0)
        await check_endpoint(url + "/v1", 2.0)
    port = free_port()
    with pytest.raises(EndpointUnreachableError) as e:
        await check_endpoint(f"http://127.0.0.1:{port}/", 2.0)
    assert str(e.value) == f"cannot reach http://127.0.0.1:{port}: connection refused"


async def test_check_endpoint_falls_back_to_health_and_reports_http_errors():
    app = web.Application()
    healthy = {"ok": True}
    app.router.add_get("/health", lambda r: web.Response(status=200 if healthy["ok"] else 503))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await check_endpoint(f"http://127.0.0.1:{port}", 2.0)  # /v1/models is 404, /health is fine
        healthy["ok"] = False
        with pytest.raises(EndpointUnreachableError) as e:
            await check_endpoint(f"http://127.0.0.1:{port}", 2.0)
    finally:
        await runner.cleanup()
    assert "HTTP 404" in str(e.value) and "HTTP 503" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("url,reason", [("ftp://127.0.0.1:21", "not an http:// or https:// URL"),
                                        ("http//127.0.0.1", "invalid URL")])
async def test_check_endpoint_bad_urls(url, reason):
    with pytest.raises(EndpointUnreachableError) as e:
        await check_endpoint(url, 2.0)
    assert str(e.value).startswith(f"cannot reach {url}: {reason}")


async def test_a_server_that_stops_sending_is_a_stall_with_evidence():
    cfg = StreamServerConfig(**FAST, behaviours=("ok", "ok", "stall"), stall_s=60.0)
    async with StreamServer(cfg) as url:
        run = await run_load(url, "m", _prompts(), ConcurrencyLoad(concurrency=2), max_requests=1000,
                             max_duration_s=60, stall_after_s=1.0)
    assert run.stop_reason == "stalled"
    d = run.stop_detail
    assert d["in_flight"] == 2 and d["stall_after_s"] == 1.0
    assert d["seconds_without_progress"] >= 1.0 and d["seconds_since_last_token"] >= 1.0
    stuck = [r for r in run.records if r.incomplete]
    assert len(stuck) == 2 and all(not r.chunks for r in stuck)
    assert sum(r.succeeded for r in run.records) >= 2


async def test_slow_tokens_and_error_answers_are_not_a_stall():
    cfg = StreamServerConfig(ttft_s=0.01, gap_s=0.05, behaviours=("ok", "http_500"))
    async with StreamServer(cfg) as url:
        run = await run_load(url, "m", _prompts(max_tokens=8), ConcurrencyLoad(concurrency=2), max_requests=8,
                             stall_after_s=2.0)
    assert run.stop_reason == "max_requests" and len(run.records) == 8


async def test_should_stop_stops_the_load_and_errors_in_it_do_not():
    calls = []

    def should_stop():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("API down")
        return "stop now" if len(calls) >= 3 else None

    async with StreamServer(StreamServerConfig(ttft_s=0.01, gap_s=0.05, default_max_tokens=1000)) as url:
        run = await run_load(url, "m", _prompts(max_tokens=1000), ConcurrencyLoad(concurrency=2), max_requests=50,
                             should_stop=should_stop)
    assert run.stop_reason == "cancelled" and run.stop_detail == {"reason": "stop now"}
    assert len(calls) == 3
    assert len(run.records) == 2 and all(r.incomplete for r in run.records)
