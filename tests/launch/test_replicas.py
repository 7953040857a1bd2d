"""Backends with replicas behind a router: the spec fields, and two simulator replicas behind a real
router from PyPI (vllm-router) measured by the runner: the load splits across the replicas (their
own ``/metrics``, labelled ``replica``), a replica killed mid-cell fails the cell with the replica
named, and teardown leaves no process."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request

import psutil
import pytest
from pydantic import ValidationError

from benchflow.launch import make_launcher
from benchflow.launch.replicas import ReplicatedLauncher, render_router_command
from benchflow.runner import measure_cell_sync
from benchflow.spec import OpenAIBackend, SimBackend, load_spec
from benchflow.spec.backends import RouterSpec
from tests.docker.conftest import docker_client, sim_image  # noqa: F401 - fixtures
from tests.launch.harness import ROUTER_COMMAND

ROUTER = {"command": ROUTER_COMMAND}


# -- the spec ------------------------------------------------------------------------------------
def test_replicas_default_to_one_without_a_router():
    b = SimBackend(name="b", kind="sim")
    assert b.replicas == 1 and b.router is None and b.replica_gpus() == [None]


def test_more_than_one_replica_needs_a_router():
    with pytest.raises(ValidationError, match="replicas: 2 needs a router"):
        SimBackend(name="b", kind="sim", replicas=2)


def test_the_router_command_must_take_the_replica_urls():
    with pytest.raises(ValidationError, match=r"must contain \{replica_urls\}"):
        RouterSpec(command=["router", "--port", "{port}"])
    with pytest.raises(ValidationError, match="extra"):
        RouterSpec(command=["r", "{replica_urls}"], bogus=1)


def test_replicas_split_a_gpu_list_evenly_and_reject_what_cannot_be_split():
    b = SimBackend(name="b", kind="sim", replicas=2, router=ROUTER, gpus=[0, 1, 2, 3])
    assert b.replica_gpus() == [[0, 1], [2, 3]]
    for gpus in ([0, 1, 2], 2, "all"):
        with pytest.raises(ValidationError, match="multiple of 2"):
            SimBackend(name="b", kind="sim", replicas=2, router=ROUTER, gpus=gpus)
    with pytest.raises(ValidationError, match="leave port out"):
        SimBackend(name="b", kind="sim", replicas=2, router=ROUTER, port=8000)
    with pytest.raises(ValidationError, match="launcher none"):
        OpenAIBackend(name="e", kind="openai", url="http://127.0.0.1:9", router=ROUTER)


def test_replica_urls_fill_one_argument_each_or_a_comma_list():
    urls = ["http://a:1", "http://b:2"]
    assert render_router_command(["r", "--w", "{replica_urls}", "--p", "{port}"], urls) == [
        "r", "--w", "http://a:1", "http://b:2", "--p", "{port}"]
    assert render_router_command(["r", "--workers={replica_urls}"], urls) == ["r", "--workers=http://a:1,http://b:2"]


# -- two simulator replicas behind vllm-router ----------------------------------------------------
def _spec(**workload):
    command = [sys.executable, "-m", "benchflow", "sim", "--host", "{host}", "--port", "{port}",
               "--model", "{model}", "--time-scale", "0.05", "{engine_args}"]
    wl = {"dataset": "D(16,32)", "load_points": [{"concurrency": 4}], "max_requests": 60, **workload}
    spec = load_spec({"name": "x", "model": "sim-model", "allow_simulated": True, "workload": wl,
                      "backends": [{"name": "pair", "kind": "sim", "launcher": "process", "command": command,
                                    "replicas": 2, "router": ROUTER}]})
    return spec, spec.cells()[0]


@pytest.fixture
def pair(tmp_path):
    spec, cell = _spec()
    launcher = make_launcher(spec.backends[0], spec.model.name, log_path=tmp_path / "backend-pair.log",
                             registry_dir=tmp_path / "processes", owner="o", run_id="r")
    assert isinstance(launcher, ReplicatedLauncher)
    launcher.start()
    launcher.ready(120)
    pids = [p.pid for p in (launcher.router, *launcher.replicas)]
    yield spec, cell, launcher
    launcher.stop(10)
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"teardown left processes {alive}"
    assert list((tmp_path / "processes").glob("*.json")) == []


def _successes(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:  # noqa: S310 - loopback only
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


@pytest.mark.integration
def test_the_load_splits_across_replicas_and_each_ones_metrics_are_labelled(pair):
    spec, cell, launcher = pair
    assert set(launcher.replica_urls) == {"r0", "r1"}
    outcome = measure_cell_sync(spec, cell, launcher.url, alive=launcher.alive, scrape_interval_s=0.5,
                                replica_urls=launcher.replica_urls)
    assert outcome.status == "completed", outcome.error
    assert outcome.summary["completed"] == 60
    df = outcome.server_samples
    ok = df[df["metric"] == "vllm:request_success_total"]
    last = {}
    for labels, group in ok.groupby("labels"):
        replica = json.loads(labels)["replica"]
        last[replica] = last.get(replica, 0.0) + group.sort_values("t_ns")["value"].iloc[-1]
    assert set(last) == {"r0", "r1"}
    assert last["r0"] > 0 and last["r1"] > 0, last  # the router sent work to both
    assert last["r0"] + last["r1"] >= 60
    logs = launcher.logs()
    assert "[router] " in logs and "[r0] " in logs and "[r1] " in logs  # the router's log is kept too


@pytest.mark.integration
def test_a_replica_killed_mid_cell_fails_the_cell_naming_the_replica(pair):
    spec, cell, launcher = pair
    victim = launcher.replicas[1]
    killed: list[int] = []

    def kill_replica_1_once_it_served():
        if not killed and _successes(victim.url) >= 3:
            os.killpg(victim.pid, signal.SIGKILL)
            killed.append(victim.pid)
        return None

    outcome = measure_cell_sync(spec, cell, launcher.url, alive=launcher.alive, scrape_interval_s=0.5,
                                should_stop=kill_replica_1_once_it_served, replica_urls=launcher.replica_urls)
    assert killed, "the load ended before replica 1 served 3 requests"
    assert outcome.status == "failed"
    assert "backend died during the cell (replica 1 (pair-r1, http://127.0.0.1:" in outcome.error
    assert "exit code -9" in outcome.error


def test_metrics_port_is_a_free_port_of_its_own():
    argv = render_router_command(["r", "--prometheus-port", "{metrics_port}", "{replica_urls}"], ["http://a:1"])
    assert argv[0:2] == ["r", "--prometheus-port"] and argv[2].isdigit() and argv[3] == "http://a:1"


@pytest.mark.integration
def test_a_redeploy_appends_only_its_own_lines_to_the_backend_log(tmp_path):
    spec, _ = _spec()
    path = tmp_path / "backend-pair.log"
    texts = []
    for _ in range(2):  # the engine builds a fresh launcher for each deploy, with the same log path
        launcher = make_launcher(spec.backends[0], spec.model.name, log_path=path, registry_dir=tmp_path / "p")
        try:
            launcher.start()
            launcher.ready(120)
        finally:
            launcher.stop(10)
        texts.append(launcher.logs())
    merged = path.read_text()
    assert merged == texts[0] + texts[1]
    assert merged.count("Router ready") == 2 and texts[1].count("Router ready") == 1


@pytest.mark.docker
@pytest.mark.integration
def test_docker_replicas_behind_the_router(tmp_path, docker_client, sim_image):
    """The replicas may be containers: the router (a local process) reaches their published ports."""
    repository, tag = sim_image.rsplit(":", 1)
    owner = f"replicas-{os.getpid()}-{tmp_path.name[-8:]}"
    backend = SimBackend(name="dpair", kind="sim", launcher="docker", image=repository, tag=tag, pull_policy="never",
                         replicas=2, router=RouterSpec(command=ROUTER_COMMAND))
    launcher = make_launcher(backend, "sim-model", log_path=tmp_path / "backend-dpair.log",
                             registry_dir=tmp_path / "p", owner=owner, run_id="r")
    try:
        launcher.start()
        launcher.ready(180)
        assert launcher.image_digest and launcher.image_digest.startswith("sha256:")
        for _ in range(6):
            body = json.dumps({"model": "sim-model", "prompt": "hi", "max_tokens": 2}).encode()
            request = urllib.request.Request(f"{launcher.url}/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback only
                resp.read()
        counts = [_successes(url) for url in launcher.replica_urls.values()]
        assert len(counts) == 2 and min(counts) > 0, counts
    finally:
        launcher.stop(10)
    left = docker_client.containers.list(all=True, filters={"label": [f"benchflow.campaign={owner}"]})
    assert left == [] and list((tmp_path / "p").glob("*.json")) == []
