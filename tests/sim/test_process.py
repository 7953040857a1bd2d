"""The simulator as a process: entry points, exit codes, signals, faults, curl and openai clients."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from benchflow.sim.config import OOM_MESSAGE
from tests.support import wait_for

from .helpers import BENCHFLOW_CMD, SIM_CMD, run_to_exit, sim_process

pytestmark = pytest.mark.integration

CLI_SIM = [*BENCHFLOW_CMD, "sim"]


def _post(url: str, body: dict, timeout: float = 10.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("cmd", [SIM_CMD, CLI_SIM], ids=["python-m", "benchflow-sim"])
def test_serves_and_exits_0_on_sigterm(cmd):
    with sim_process("--time-scale", "0.1", cmd=cmd) as sim:
        status, data = _post(sim.base_url + "/v1/completions", {"prompt": "a b", "max_tokens": 3})
        assert status == 200 and data["usage"]["completion_tokens"] == 3
    assert sim.proc.returncode == 0
    assert "Uvicorn running on http://127.0.0.1:" in sim.output


@pytest.mark.parametrize("cmd", [SIM_CMD, CLI_SIM], ids=["python-m", "benchflow-sim"])
def test_too_small_gpu_memory_utilization_exits_with_vllms_oom_message(cmd):
    rc, output = run_to_exit("--engine-arg", "gpu-memory-utilization=0.1", cmd=cmd)
    assert rc == 1
    assert OOM_MESSAGE in output
    assert "Uvicorn running" not in output


@pytest.mark.parametrize("cmd", [SIM_CMD, CLI_SIM], ids=["python-m", "benchflow-sim"])
@pytest.mark.parametrize("args, expected", [
    (["--engine-arg", "max-num-sequences=8"], "engine_args.max-num-sequences: unknown engine arg"),
    (["--engine-arg", "max-num-seqs=lots"], "engine_args.max-num-seqs:"),
    (["--max-num-sequences", "8"], "unrecognized arguments: --max-num-sequences"),
])
def test_unknown_or_bad_engine_args_exit_2_with_a_clear_message(cmd, args, expected):
    rc, output = run_to_exit(*args, cmd=cmd)
    assert rc == 2
    assert expected in output


def test_crash_after_n_requests_exits_1_and_says_why():
    with sim_process("--crash-after", "1", "--time-scale", "0.1") as sim:
        assert _post(sim.base_url + "/v1/completions", {"prompt": "a", "max_tokens": 2})[0] == 200
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            _post(sim.base_url + "/v1/completions", {"prompt": "a", "max_tokens": 2})
        assert sim.wait_exit(10) == 1
    assert "simulated crash (--crash-after 1): request 2 received" in sim.output


@pytest.fixture(scope="module")
def client_sim():
    """One simulator for the client tests below (they only read from it)."""
    with sim_process("--time-scale", "0.1", "--model", "sim-llama") as sim:
        yield sim


def test_curl_streams_sse(client_sim):
    body = json.dumps({"model": "sim-llama", "prompt": "x y", "max_tokens": 4, "stream": True,
                       "stream_options": {"include_usage": True}})
    out = subprocess.run(["curl", "-sSN", "--max-time", "60", "-H", "Content-Type: application/json",
                          "-d", body, client_sim.base_url + "/v1/completions"],
                         capture_output=True, text=True, timeout=90, check=True).stdout
    events = [e for e in out.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert len(events) == 4 + 2  # 4 tokens, usage, [DONE]
    assert json.loads(events[-2][len("data: "):])["usage"]["completion_tokens"] == 4


def test_openai_client_streaming_and_not(client_sim):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=client_sim.base_url + "/v1", api_key="none", timeout=60, max_retries=0)
    assert [m.id for m in client.models.list()] == ["sim-llama"]

    chunks = list(client.chat.completions.create(
        model="sim-llama", messages=[{"role": "user", "content": "say something"}], max_tokens=5,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5 and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 2

    chunks = list(client.completions.create(model="sim-llama", prompt="one two three", max_tokens=4,
                                            stream=True, stream_options={"include_usage": True}))
    assert len("".join(c.choices[0].text for c in chunks if c.choices).split()) == 4
    assert chunks[-1].usage.total_tokens == 7

    chat = client.chat.completions.create(model="sim-llama", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=3)
    assert len(chat.choices[0].message.content.split()) == 3 and chat.usage.completion_tokens == 3
    done = client.completions.create(model="sim-llama", prompt="hi", max_tokens=2)
    assert done.choices[0].finish_reason == "length" and done.usage.prompt_tokens == 1

    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
        client.completions.create(model="sim-llama", prompt="hi", max_tokens=9000)


def _health(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_startup_delay_reports_loading_over_http():
    # The delay starts just before the start-up line; it only has to outlast one request after it.
    with sim_process("--startup-delay-s", "2", wait_ready=False) as sim:
        assert _health(sim.base_url) == (503, b"loading")
        wait_for(lambda: _health(sim.base_url)[0] == 200, timeout_s=30, what="/health to answer 200",
                 detail=lambda: sim.output)
        assert _post(sim.base_url + "/v1/completions", {"prompt": "a", "max_tokens": 1})[0] == 200


def test_the_module_entry_point_imports_nothing_heavy():
    code = ("import sys, benchflow.sim.__main__, benchflow.sim.server, benchflow.sim.virtual; "
            "heavy = {'pandas', 'sqlalchemy', 'prefect', 'boto3', 'scipy', 'pyarrow'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sigterm_with_hung_streams_still_exits_0():
    import threading

    with sim_process("--stall-after", "0") as sim:
        hung = threading.Thread(target=lambda: pytest.raises(Exception, _post, sim.base_url + "/v1/completions",
                                                             {"prompt": "a", "stream": True}, 15), daemon=True)
        hung.start()
        wait_for(lambda: "simulated stall (--stall-after 0)" in sim.output, timeout_s=30,
                 what="the simulator to log the stall", detail=lambda: sim.output)
        assert sim.stop() == 0
    hung.join(timeout=15)
    assert not hung.is_alive()
