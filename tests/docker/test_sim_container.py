"""The simulator image on a real engine: started from the rendered create arguments (port published
on 127.0.0.1), it answers /health and streams a completion; ``benchflow cleanup --campaign`` then
removes it and leaves other campaigns' containers alone."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from benchflow.launch.docker_cleanup import remove_leftovers
from benchflow.launch.docker_render import render_container
from benchflow.spec import SimBackend
from tests.support import free_port
from tests.docker.helpers import benchflow_cli, container_exists

pytestmark = [pytest.mark.docker, pytest.mark.integration]
MODEL = "sim-docker-test"


async def wait_healthy(base_url: str, container, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            await asyncio.to_thread(container.reload)
            if container.status not in ("created", "running"):
                logs = (await asyncio.to_thread(container.logs)).decode(errors="replace")
                pytest.fail(f"simulator container {container.status}:\n{logs[-3000:]}")
            try:
                async with session.get(f"{base_url}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    logs = (await asyncio.to_thread(container.logs)).decode(errors="replace")
    pytest.fail(f"/health did not answer 200 within {timeout_s}s:\n{logs[-3000:]}")


async def stream_completion(base_url: str, max_tokens: int) -> list[dict]:
    """The parsed SSE messages of one streamed completion (``[DONE]`` kept as the string)."""
    body = {"model": MODEL, "prompt": "one two three four five six", "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0.0}
    messages: list = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(f"{base_url}/v1/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    data = line[len("data:"):].strip()
                    messages.append(data if data == "[DONE]" else json.loads(data))
    return messages


def test_sim_image_serves_a_stream_and_cleanup_removes_it(docker_client, sim_image, campaign_id, request):
    other_id = campaign_id + "-other"
    request.addfinalizer(lambda: remove_leftovers(docker_client, other_id, grace_s=0))
    backend = SimBackend(name="sim-docker", kind="sim", launcher="docker", engine_args={"max-num-seqs": 4})
    plans = [render_container(backend, model=MODEL, campaign_id=cid, cell_id="cell-0", host_port=free_port())
             for cid in (campaign_id, other_id)]
    assert plans[0].create_kwargs["ports"]["8000/tcp"][0] == "127.0.0.1"
    containers = []
    for plan in plans:
        container = docker_client.containers.create(**plan.create_kwargs)
        container.start()
        containers.append(container)

    asyncio.run(wait_healthy(plans[0].base_url, containers[0]))
    messages = asyncio.run(stream_completion(plans[0].base_url, max_tokens=5))
    assert messages[-1] == "[DONE]"
    text = "".join(c.get("text", "") for m in messages[:-1] for c in m.get("choices", []))
    assert text.strip(), messages
    usage = [m["usage"] for m in messages[:-1] if m.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 5

    result = benchflow_cli("cleanup", "--campaign", campaign_id, "--grace-s", "10")
    assert result.returncode == 0, result.stderr
    assert f"removed {containers[0].name}" in result.stdout
    assert not container_exists(docker_client, containers[0].id)
    assert container_exists(docker_client, containers[1].id)  # another campaign's backend stays
