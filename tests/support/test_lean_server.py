"""The lean benchmark server (tests/support/lean_server.py) gives benchflow's load generator complete,
correct answers, zero-delay and paced, over keep-alive connections, and keeps per-prompt first writes."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from benchflow.loadgen import run_load
from benchflow.records import Prompt
from benchflow.spec import ConcurrencyLoad
from tests.support.lean_server import serve_lean_in_process
from tests.support.stream_server import StreamServerConfig


def _prompts(n: int, tag: str) -> list[Prompt]:
    return [Prompt(text=f"{tag}-{k} hello world", input_tokens=3, max_tokens=8) for k in range(n)]


def _load(url: str, prompts: list[Prompt], api: str = "completions"):
    return asyncio.run(run_load(url, "lean", prompts, ConcurrencyLoad(concurrency=4), api=api, warmup_requests=0,
                                max_requests=len(prompts), max_duration_s=60, request_timeout_s=30.0))


def test_zero_delay_answers_are_complete_streams_for_both_apis():
    with serve_lean_in_process(StreamServerConfig(ttft_s=0.0, gap_s=0.0)) as url:
        for api in ("completions", "chat"):
            run = _load(url, _prompts(40, api), api=api)
            assert len(run.records) == 40
            for rec in run.records:
                assert rec.error_class is None, (rec.error_class, rec.error_message)
                assert rec.completion_tokens == 8 and len(rec.chunks) == 8


def test_paced_answers_are_complete_and_each_prompt_s_first_write_is_kept():
    config = StreamServerConfig(ttft_s=0.03, gap_s=0.005, record_first_writes=True)
    with serve_lean_in_process(config) as url:
        prompts = _prompts(12, "paced")
        run = _load(url, prompts)
        with urllib.request.urlopen(url + "/first_writes", timeout=10) as r:
            table = json.loads(r.read())
    assert all(rec.error_class is None and len(rec.chunks) == 8 for rec in run.records)
    assert set(table) == {p.text for p in prompts}
    for start_ns, first_ns in table.values():
        assert first_ns - start_ns >= 30e6  # the first output is written ttft_s after the request was read
