"""What `benchflow infra bootstrap` plans to create (benchflow.bootstrap), and its CLI without a server."""

from __future__ import annotations

import pytest
import yaml

from benchflow.bootstrap import HostConfig, InfraConfig, build_plan, load_infra_config
from benchflow.cli import main
from benchflow.errors import SpecError
from tests.deploy.stack import REPO


def test_the_default_plan_has_both_pools_their_gpu_queues_and_this_hosts_gpu_slots(tmp_path):
    plan = build_plan(InfraConfig(), tmp_path, local_host=HostConfig(name="Node-1", gpus=2), env={})
    assert [(p.name, p.type, [q.name for q in p.queues]) for p in plan.pools] == [
        ("benchflow-gpu", "process", ["h100", "a100"]), ("benchflow-docker", "docker", ["h100", "a100"])]
    assert plan.gpu_limits == ["gpu-node-1-0", "gpu-node-1-1"]
    assert plan.variables == {} and plan.secrets == {}
    assert "gpu_ids" in plan.pools[1].base_job_template["variables"]["properties"]


def test_secrets_come_from_the_environment_and_never_show(tmp_path):
    env = {"BENCHFLOW_DATABASE_URL": "postgresql://u:hunter2@db/x", "BENCHFLOW_ARTIFACTS": "s3://b/p"}
    plan = build_plan(InfraConfig(), tmp_path, env=env)
    assert plan.secrets["benchflow-database-url"].get_secret_value() == env["BENCHFLOW_DATABASE_URL"]
    assert plan.variables == {"benchflow_artifacts": "s3://b/p"}
    shown = repr(plan) + "\n".join(plan.describe())
    assert "hunter2" not in shown and "benchflow-database-url" in shown


def test_the_example_config_lists_hosts_and_is_valid():
    config, base = load_infra_config(REPO / "infra" / "bootstrap.yaml")
    plan = build_plan(config, base, local_host=HostConfig(name="ignored", gpus=8), env={})
    assert plan.gpu_limits and not any("ignored" in n for n in plan.gpu_limits)
    assert len(plan.gpu_limits) == sum(h.gpus for h in config.hosts)


def test_a_bad_config_reports_every_problem(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"hosts": [{"name": "a", "gpus": 2}, {"name": "A", "gpus": 1}],
                                    "variables": {"Bad-Name": "x"}, "secrets_from_env": {"db": "1NOT_ENV"}}))
    with pytest.raises(SpecError) as e:
        load_infra_config(path)
    text = str(e.value)
    assert "hosts: a is listed twice" in text and "variables.Bad-Name" in text and "1NOT_ENV" in text
    path.write_text(yaml.safe_dump({"work_pools": [{"name": "p", "type": "k8s", "base_job_template": "x.json"}]}))
    with pytest.raises(SpecError, match="work_pools.0.type"):
        load_infra_config(path)


def test_a_missing_template_is_named(tmp_path):
    config = InfraConfig.model_validate({"work_pools": [{"name": "p", "type": "process",
                                                         "base_job_template": "nope.json"}]})
    with pytest.raises(SpecError, match="nope.json: not found"):
        build_plan(config, tmp_path, env={})


def test_dry_run_touches_nothing_and_a_missing_server_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["infra", "bootstrap", "--dry-run", "--gpus", "1", "--host", "n1"]) == 0
    out = capsys.readouterr().out
    assert "work pool benchflow-gpu (process), queues h100, a100" in out and "gpu-n1-0" in out
    assert main(["infra", "bootstrap", "--gpus", "1"]) == 2
    assert "no Prefect server given" in capsys.readouterr().err
