"""The deployments' pull step and the in-flow loading of secrets."""

from __future__ import annotations

import pytest

from flows.pull import code_dir
from tasks import secrets
from tests.deploy.stack import REPO


def test_the_pull_step_finds_the_checkout_from_anywhere(tmp_path):
    assert code_dir(env={}, cwd=tmp_path) == REPO  # a process worker's temporary directory
    image = tmp_path / "opt-benchflow"
    (image / "deployments").mkdir(parents=True)
    assert code_dir(env={}, cwd=image) == image  # the worker image's WORKDIR
    assert code_dir(env={"BENCHFLOW_CODE_DIR": str(image)}, cwd=REPO) == image.resolve()
    with pytest.raises(FileNotFoundError):
        code_dir(env={"BENCHFLOW_CODE_DIR": str(tmp_path / "missing")})


def test_settings_missing_from_the_environment_come_from_blocks_and_variables(monkeypatch):
    blocks = {"benchflow-database-url": "postgresql://db/results"}
    variables = {"benchflow_artifacts": "s3://bucket/prefix"}
    monkeypatch.setattr(secrets, "_secret", blocks.get)
    monkeypatch.setattr(secrets, "_variable", variables.get)
    env = {"AWS_ACCESS_KEY_ID": "from-env"}
    assert sorted(secrets.load_settings(env)) == ["BENCHFLOW_ARTIFACTS", "BENCHFLOW_DATABASE_URL"]
    assert env == {"AWS_ACCESS_KEY_ID": "from-env", "BENCHFLOW_DATABASE_URL": "postgresql://db/results",
                   "BENCHFLOW_ARTIFACTS": "s3://bucket/prefix"}
    env = {"BENCHFLOW_DATABASE_URL": "sqlite:///x.db"}
    secrets.load_settings(env)
    assert env["BENCHFLOW_DATABASE_URL"] == "sqlite:///x.db"  # the environment wins


def test_an_unreachable_api_leaves_the_defaults(monkeypatch):
    def boom(name):
        raise RuntimeError("no API")

    monkeypatch.setattr(secrets, "_secret", boom)
    monkeypatch.setattr(secrets, "_variable", boom)
    env: dict[str, str] = {}
    assert secrets.load_settings(env) == [] and env == {}
