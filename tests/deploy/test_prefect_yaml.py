"""deployments/prefect.yaml: what `prefect deploy --all` creates, checked without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from benchflow.bootstrap import InfraConfig
from tests.deploy.stack import REPO

PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
SECRETISH_KEY = re.compile(r"(?i)(password|passwd|secret|token|credential|api[_-]?key|access[_-]?key|database_url|dsn)")
SECRETISH_VALUE = re.compile(
    r"(?i)(prefect\.blocks\.secret|://[^/\s:@]+:[^/\s@]+@|AKIA[0-9A-Z]{12,}|hf_[A-Za-z0-9]{10,})")


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def deployments(config) -> dict[str, dict]:
    """``{"<flow name>/<deployment name>": deployment}``: a deployment name is unique per flow only
    (``campaign/adhoc`` and ``tune/adhoc``)."""
    from prefect.cli.deploy._models import PrefectYamlModel

    PrefectYamlModel.model_validate(config)  # the shape `prefect deploy` accepts
    out = {f"{_flow(d['entrypoint']).name}/{d['name']}": d for d in config["deployments"]}
    assert len(out) == len(config["deployments"]), "two deployments with one name on one flow"
    return out


def _flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(entrypoint)


def test_the_deployments_exist_under_their_flow_names(deployments):
    names = set(deployments)
    assert names == {"campaign/adhoc", "campaign/nightly", "health/fleet", "tune/adhoc", "tune-trial/trial",
                     "campaign-backend/backend"}
    from flows.campaign_backend import BACKEND_DEPLOYMENT
    from flows.tune import TRIAL_DEPLOYMENT

    assert TRIAL_DEPLOYMENT in names, "the tune flow starts its trials as runs of this deployment"
    assert BACKEND_DEPLOYMENT in names, "a placement: pool campaign starts its backends as runs of this deployment"


def test_every_deployment_routes_through_a_bootstrapped_pool_and_queue(deployments):
    pools = {p.name: {q.name for q in p.queues} | {"default"} for p in InfraConfig().work_pools}
    for name, d in deployments.items():
        pool = d["work_pool"]
        assert pool["name"] in pools, name
        assert pool["work_queue_name"] in pools[pool["name"]], name
        assert d.get("enforce_parameter_schema") is True, f"{name}: the API must validate parameters"


def test_the_nightly_runs_on_a_cron_with_a_timezone_and_never_overlaps(deployments):
    nightly = deployments["campaign/nightly"]
    (schedule,) = nightly["schedules"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "Europe/Berlin" and schedule["active"]
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    spec = REPO / nightly["parameters"]["spec"]
    from benchflow.spec import load_spec

    assert load_spec(spec).regression is not None


def _walk(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, value


def test_no_secret_goes_into_job_variables_or_parameters(config, deployments):
    raw = PREFECT_YAML.read_text()
    assert "prefect.blocks.secret" not in re.sub(r"#.*", "", raw)  # not even outside job_variables
    sections = [("definitions", config.get("definitions", {}))]
    sections += [(f"{n}.{k}", d.get(k, {})) for n, d in deployments.items() for k in ("work_pool", "parameters")]
    for where, section in sections:
        for path, value in _walk(section):
            leaf = path.rsplit(".", 1)[-1]
            assert not SECRETISH_KEY.search(leaf), f"{where}.{path}: looks like a secret setting"
            assert not SECRETISH_VALUE.search(str(value)), f"{where}.{path}: looks like a secret value"


def test_the_secret_scan_would_catch_a_secret():
    bad = {"job_variables": {"env": {"BENCHFLOW_DATABASE_URL": "{{ prefect.blocks.secret.db }}",
                                     "X": "postgresql://u:hunter2@db/x"}}}
    leaves = dict(_walk(bad))
    assert any(SECRETISH_KEY.search(p.rsplit(".", 1)[-1]) for p in leaves)
    assert sum(bool(SECRETISH_VALUE.search(str(v))) for v in leaves.values()) == 2


def test_the_pull_step_is_importable_and_tags_are_labels_only(config, deployments):
    from prefect.utilities.importtools import import_object

    for step in config["pull"]:
        (fqn,) = step
        assert callable(import_object(fqn))
    for d in deployments.values():
        assert "benchflow" in d["tags"]


def test_flow_parameters_are_typed_so_the_ui_has_a_form(deployments):
    from prefect.utilities.callables import parameter_schema

    by_flow = deployments
    schema = parameter_schema(_flow(by_flow["campaign/adhoc"]["entrypoint"])).model_dump()
    spec = schema["properties"]["spec"]
    assert {"$ref": "#/definitions/CampaignSpec"} in spec["anyOf"]
    assert schema["required"] == ["spec"]
    nightly = parameter_schema(_flow(by_flow["campaign/nightly"]["entrypoint"])).model_dump()
    assert set(nightly["properties"]) == {"spec", "campaign_id", "baseline_campaign_id"}
    assert Path(REPO / nightly["properties"]["spec"]["default"]).is_file()


def test_the_tune_deployments_have_typed_parameters(deployments):
    from prefect.utilities.callables import parameter_schema

    by_flow = deployments
    tune = parameter_schema(_flow(by_flow["tune/adhoc"]["entrypoint"])).model_dump()
    assert {"$ref": "#/definitions/TuningSpec"} in tune["properties"]["spec"]["anyOf"]
    assert tune["required"] == ["spec"]
    assert set(tune["properties"]) == {"spec", "study_id", "trial_deployment", "trial_job_variables"}
    props = tune["definitions"]["TuningSpec"]["properties"]
    assert props["parallel"]["type"] == "integer" and props["placement"]["enum"] == ["local", "pool"]
    trial = parameter_schema(_flow(by_flow["tune-trial/trial"]["entrypoint"])).model_dump()
    assert set(trial["required"]) == {"spec", "study_id"} and trial["properties"]["lane"]["type"] == "integer"
