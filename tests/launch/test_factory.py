"""make_launcher picks the launcher of a backend spec; env_extra and the spec's env; the clean-up
never runs without an owner. (No engine needed: nothing is started.)"""

from __future__ import annotations

import pytest

from benchflow.launch import EndpointLauncher, ProcessLauncher, cleanup_leftovers, make_launcher
from benchflow.launch.docker import DockerLauncher
from benchflow.spec import OpenAIBackend, SimBackend, VllmBackend


def test_each_launcher_kind_gets_its_launcher(tmp_path):
    log_path = tmp_path / "b.log"
    process = make_launcher(SimBackend(name="p", kind="sim", launcher="process"), "m", log_path=log_path,
                            registry_dir=tmp_path, owner="c1", run_id="r1")
    endpoint = make_launcher(OpenAIBackend(name="e", kind="openai", url="http://127.0.0.1:9/"), "m",
                             log_path=log_path)
    container = make_launcher(SimBackend(name="d", kind="sim", launcher="docker"), "m", log_path=log_path,
                              owner="c1", run_id="r1")
    assert isinstance(process, ProcessLauncher) and (process.owner, process.run_id) == ("c1", "r1")
    assert isinstance(endpoint, EndpointLauncher) and endpoint.url == "http://127.0.0.1:9"
    assert isinstance(container, DockerLauncher)
    labels = container.plan.create_kwargs["labels"]
    assert labels["benchflow.campaign"] == "c1" and labels["benchflow.run"] == "r1"
    assert container.log_path == log_path
    assert all(launcher.url is None or launcher is endpoint for launcher in (process, endpoint, container))
    assert process.image_digest is None and endpoint.image_digest is None


def test_env_extra_reaches_the_backend_but_the_spec_env_wins(tmp_path, caplog):
    extra = {"HF_TOKEN": "from-the-secret-store", "OTHER": "x"}
    plain = make_launcher(VllmBackend(name="v", kind="vllm", launcher="docker"), "m", log_path=tmp_path / "v.log",
                          env_extra=extra)
    assert plain.create_kwargs()["environment"] == extra
    assert "from-the-secret-store" not in repr(plain.plan.redacted())  # never in what is logged
    pinned = make_launcher(VllmBackend(name="w", kind="vllm", launcher="docker", env={"HF_TOKEN": "in-spec"}), "m",
                           log_path=tmp_path / "w.log", env_extra=extra)
    assert pinned.create_kwargs()["environment"]["HF_TOKEN"] == "in-spec"
    assert "stored in plain text" in caplog.text
    process = make_launcher(SimBackend(name="p", kind="sim", launcher="process", env={"OTHER": "spec"}), "m",
                            log_path=tmp_path / "p.log", env_extra=extra)
    assert process.env_extra == extra


def test_cleanup_never_runs_for_everything():
    with pytest.raises(ValueError, match="needs an owner"):
        cleanup_leftovers()
