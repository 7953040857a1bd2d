"""The test server's per-prompt first-write record (bench/client_ttft.py subtracts it from the client's TTFT)."""

from __future__ import annotations

import json
import urllib.request

from tests.support.stream_server import StreamServerConfig, serve_in_thread


def _post(url: str, prompt: str) -> bytes:
    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 3, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def test_each_prompt_s_handler_start_and_first_write_are_served_in_order():
    with serve_in_thread(StreamServerConfig(ttft_s=0.02, gap_s=0.005, record_first_writes=True)) as server:
        for prompt in ("a-1 x", "a-2 y"):
            assert b"[DONE]" in _post(server.url, prompt)
        with urllib.request.urlopen(server.url + "/first_writes", timeout=10) as r:
            table = json.loads(r.read())
    assert set(table) == {"a-1 x", "a-2 y"}
    for start_ns, first_ns in table.values():
        assert first_ns - start_ns >= 20e6  # the first output is written ttft_s after the handler starts
    assert table["a-1 x"][1] < table["a-2 y"][0]


def test_nothing_is_kept_unless_asked():
    with serve_in_thread(StreamServerConfig(ttft_s=0.0, gap_s=0.001)) as server:
        _post(server.url, "b-1")
        with urllib.request.urlopen(server.url + "/first_writes", timeout=10) as r:
            assert json.loads(r.read()) == {}
