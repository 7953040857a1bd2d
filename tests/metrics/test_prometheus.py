"""The Prometheus scraper against real HTTP servers on 127.0.0.1, and the pure parser."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from benchflow.metrics.prometheus import PrometheusScraper, compile_patterns, metrics_url, parse_metrics
from benchflow.metrics.samples import SAMPLE_COLUMNS, series
from tests.support import free_port, wait_for_async


def exposition(n: int) -> str:
    """What a vLLM server might expose on its n-th scrape: KV usage rises with n."""
    kv = min(1.0, n / 10)
    return f"""# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} {n}
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="0.5",model_name="m"}} {n}
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="+Inf",model_name="m"}} {2 * n}
vllm:e2e_request_latency_seconds_sum{{engine="0",model_name="m"}} {0.7 * n}
vllm:e2e_request_latency_seconds_count{{engine="0",model_name="m"}} {2 * n}
vllm:e2e_request_latency_seconds_created{{engine="0",model_name="m"}} 1.7e9
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
"""


class MetricsServer:
    """A tiny aiohttp server whose /metrics changes on every scrape; can fail on demand."""

    def __init__(self) -> None:
        self.hits = 0
        self.fail_first = 0  # answer HTTP 500 to this many scrapes first
        self.garbage = False
        self.delay_s = 0.0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.hits <= self.fail_first:
            return web.Response(status=500, text="engine busy")
        if self.garbage:
            return web.Response(text="this is {not prometheus\n")
        return web.Response(text=exposition(self.hits), content_type="text/plain")

    async def wait_for_hits(self, n: int, timeout_s: float = 30.0) -> None:
        await wait_for_async(lambda: self.hits >= n, timeout_s, what=f"{n} scrapes of the test server")


@pytest.fixture
async def server():
    srv = MetricsServer()
    app = web.Application()
    app.router.add_get("/metrics", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", srv.port)
    await site.start()
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.mark.integration
async def test_scraper_captures_a_changing_gauge_series(server):
    scraper = PrometheusScraper(server.url, interval_s=0.02)
    async with scraper.running():
        await server.wait_for_hits(5)
    assert not scraper.is_running
    assert scraper.gaps == []
    df = scraper.frame()
    assert list(df.columns) == SAMPLE_COLUMNS
    assert set(df["source"]) == {"server"}
    t_ns, kv = series(df, "vllm:kv_cache_usage_perc")
    assert len(t_ns) >= 5  # a start sample, periodic ones, and the final sample at stop
    assert t_ns == sorted(t_ns) and len(set(t_ns)) == len(t_ns)
    assert kv == sorted(kv) and kv[-1] > kv[0]  # the gauge rose as the server said
    assert str(df["at"].dt.tz) == "UTC"
    assert df["at"].is_monotonic_increasing
    row = df[df["metric"] == "vllm:kv_cache_usage_perc"].iloc[0]
    assert json.loads(row["labels"]) == {"engine": "0", "model_name": "m"}


@pytest.mark.integration
async def test_histograms_keep_bucket_sum_count_and_other_metrics_are_filtered(server):
    scraper = PrometheusScraper(server.url, interval_s=0.02)
    async with scraper.running():
        await server.wait_for_hits(2)
    df = scraper.frame()
    metrics = set(df["metric"])
    base = "vllm:e2e_request_latency_seconds"
    assert {f"{base}_bucket", f"{base}_sum", f"{base}_count"} <= metrics
    assert f"{base}_created" not in metrics
    assert "process_cpu_seconds_total" not in metrics  # not matched by vllm:* / sglang:*
    les = {json.loads(s)["le"] for s in df[df["metric"] == f"{base}_bucket"]["labels"]}
    assert les == {"0.5", "+Inf"}
    _, inf = series(df, f"{base}_bucket", {"le": "+Inf"})
    _, count = series(df, f"{base}_count")
    assert inf == count


@pytest.mark.integration
async def test_unreachable_endpoint_gives_gaps_not_a_crash():
    url = f"http://127.0.0.1:{free_port()}/metrics"  # nothing listens there
    scraper = PrometheusScraper(url, interval_s=0.02, timeout_s=1.0)
    async with scraper.running():
        await wait_for_async(lambda: len(scraper.gaps) >= 3, timeout_s=30, what="three failed scrapes")
    assert scraper.frame().empty
    assert list(scraper.frame().columns) == SAMPLE_COLUMNS
    gaps = scraper.gaps_frame()
    assert len(gaps) >= 3 and all(url in e for e in gaps["error"])
    assert set(gaps["source"]) == {"server"}


@pytest.mark.integration
async def test_server_errors_are_gaps_and_scraping_recovers(server):
    server.fail_first = 2
    scraper = PrometheusScraper(server.url, interval_s=0.02)
    async with scraper.running():
        await server.wait_for_hits(5)
    assert len(scraper.gaps) == 2
    assert all("HTTP 500" in g.error for g in scraper.gaps)
    t_ns, _ = series(scraper.frame(), "vllm:num_requests_running")
    assert len(t_ns) >= 3 and min(t_ns) > max(g.t_ns for g in scraper.gaps)


@pytest.mark.integration
async def test_unparsable_text_and_timeouts_are_gaps(server):
    server.garbage = True
    scraper = PrometheusScraper(server.url, interval_s=0.02)
    async with scraper.running():
        await server.wait_for_hits(2)
    assert scraper.gaps and all("unparsable" in g.error for g in scraper.gaps)

    server.garbage = False
    server.delay_s = 0.5
    slow = PrometheusScraper(server.url, interval_s=0.05, timeout_s=0.1, final_sample=False)
    async with slow.running():
        await wait_for_async(lambda: slow.gaps, timeout_s=30, what="a timed-out scrape")
    assert "timed out" in slow.gaps[0].error
    assert slow.frame().empty


def test_compile_patterns_accepts_globs_and_regexes():
    match = compile_patterns(["vllm:*", "re:sglang:(num|token)_.*", re.compile(r"custom_[0-9]+")])
    assert match("vllm:kv_cache_usage_perc")
    assert match("sglang:num_running_reqs") and not match("sglang:cache_hit_rate")
    assert match("custom_42") and not match("custom_42x")
    assert not match("process_cpu_seconds_total")


def test_metrics_url_from_endpoint_base_urls():
    assert metrics_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/metrics"
    assert metrics_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/metrics"
    assert metrics_url("http://h:1/metrics") == "http://h:1/metrics"
    assert PrometheusScraper.for_endpoint("http://h:2/v1").url == "http://h:2/metrics"


def test_parse_metrics_rejects_invalid_text():
    with pytest.raises(ValueError):
        parse_metrics("this is {not prometheus\n", ["*"])


names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda s: not s.endswith(("_total", "_created", "_count", "_sum", "_bucket", "_info"))
)


@settings(max_examples=40, deadline=None)
@given(
    name=names,
    label_values=st.lists(st.text(max_size=12), min_size=1, max_size=4, unique=True),
    values=st.lists(st.floats(allow_nan=False, width=64), min_size=4, max_size=4),
)
def test_parse_metrics_round_trips_prometheus_client_exposition(name, label_values, values):
    registry = CollectorRegistry()
    gauge = Gauge(f"vllm:{name}", "doc", ["who"], registry=registry)
    for lv, v in zip(label_values, values, strict=False):
        gauge.labels(who=lv).set(v)
    text = generate_latest(registry).decode()
    rows = parse_metrics(text, ["vllm:*"])
    got = {json.loads(lab)["who"]: v for m, lab, v in rows if m == f"vllm:{name}"}
    assert got == dict(zip(label_values, values, strict=False))
    assert parse_metrics(text, ["sglang:*"]) == []
