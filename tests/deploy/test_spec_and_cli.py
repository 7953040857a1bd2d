"""The spec's regression section and gpu_slots, and the trigger/baseline CLIs without a server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.cli import main
from benchflow.errors import SpecError
from benchflow.spec import load_spec
from benchflow.store.db import ResultStore
from tests.deploy.conftest import tiny_spec, write_spec


def test_the_regression_section_is_optional_and_strict():
    assert load_spec(tiny_spec()).regression is None
    with pytest.raises(SpecError) as e:
        load_spec(tiny_spec(regression={"tolerance": 1.5, "baseline": "yesterday", "metrics": ["ttft_ms.p42"],
                                        "surprise": 1}))
    text = str(e.value)
    for path in ("regression.tolerance", "regression.baseline", "regression.metrics[0]", "regression.surprise"):
        assert path in text


def test_regression_rules_that_involve_other_sections():
    with pytest.raises(SpecError) as e:
        load_spec(tiny_spec(regression={"metrics": ["goodput"], "tolerances": {"ttft_ms.p99": 0.1}}))
    assert "regression.metrics[0]: goodput needs an slo section" in str(e.value)
    assert "regression.tolerances.ttft_ms.p99: ttft_ms.p99 is not among the checked metrics" in str(e.value)
    with pytest.raises(SpecError, match="gpu_slots"):
        load_spec(tiny_spec(gpu_slots=[-1]))


@settings(max_examples=30, deadline=None)
@given(tolerance=st.floats(min_value=0, max_value=0.99), per_metric=st.floats(min_value=0, max_value=0.99))
def test_a_dumped_spec_loads_again_to_the_same_campaign(tolerance, per_metric):
    """What `benchflow trigger --spec` sends (the dumped spec) is the same campaign on the worker."""
    spec = load_spec(tiny_spec(gpu_slots=[0], regression={"tolerance": tolerance,
                                                          "tolerances": {"ttft_ms.p99": per_metric}}))
    again = load_spec(spec.model_dump(mode="json", exclude_defaults=True))
    assert again.content_hash() == spec.content_hash() and again == spec
    assert [c.id for c in again.cells()] == [c.id for c in spec.cells()]


def test_trigger_refuses_bad_input_before_calling_any_server(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    good = write_spec(tmp_path / "ok.yaml", tiny_spec())
    assert main(["trigger", "campaign/adhoc", "--spec", str(good)]) == 2
    assert "no Prefect server given" in capsys.readouterr().err
    assert main(["trigger", "campaign/adhoc", "--spec", str(good), "--campaign-id", "Bad Id",
                 "--api-url", "http://127.0.0.1:9/api"]) == 2
    assert "--campaign-id" in capsys.readouterr().err
    assert main(["trigger", "campaign/adhoc", "--spec-path", "x.yaml", "--param", "novalue",
                 "--api-url", "http://127.0.0.1:9/api"]) == 2


def test_baseline_pin_and_show(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    monkeypatch.setenv("BENCHFLOW_DATABASE_URL", url)
    store = ResultStore(url)
    store.upgrade()
    store.upsert_campaign("n1", name="nightly-x", spec={}, spec_hash="h", kind="nightly", status="completed")
    store.upsert_campaign("n2", name="nightly-x", spec={}, spec_hash="h", kind="nightly", status="completed")
    assert main(["baseline", "show", "nightly-x"]) == 0
    assert "last completed nightly" in capsys.readouterr().out
    assert main(["baseline", "pin", "n1"]) == 0
    assert main(["baseline", "show", "nightly-x"]) == 0
    assert "nightly-x: n1 (pinned" in capsys.readouterr().out
    assert main(["baseline", "pin", "nope"]) == 1
    assert main(["baseline", "show", "other"]) == 1


def test_secret_fields_names_every_secret_looking_value_and_nothing_else():
    from benchflow.cli.trigger import secret_fields

    params = {"campaign_id": "c1", "spec": {
        "name": "x", "model": {"name": "m", "tokenizer": "t"},
        "workload": {"dataset": {"jsonl": "a.jsonl", "max_tokens": 5}},
        "backends": [
            {"name": "a", "env": {"HF_TOKEN": "hf_x", "LOG_LEVEL": "info", "EMPTY_KEY": ""},
             "engine_args": {"max-num-batched-tokens": 8192, "api-key": "k"}},
            {"name": "b", "command": ["serve", "--api-key", "v", "--port", "1", "--hf-token=w"]},
            {"name": "c", "url": "http://user:pw@host:8000"}, {"name": "d", "url": "http://host:8000"}]}}
    assert secret_fields(params) == [
        "spec.backends[0].env.HF_TOKEN", "spec.backends[0].engine_args.api-key",
        "spec.backends[1].command[2] (value of --api-key)", "spec.backends[1].command[5] (value of --hf-token)",
        "spec.backends[2].url (password in a URL)"]
    assert secret_fields({"spec": "deployments/campaigns/demo.yaml", "code_path": "/src"}) == []


def test_trigger_refuses_secrets_before_calling_any_server(tmp_path, capsys):
    spec = tiny_spec()
    spec["backends"][0]["env"] = {"HF_TOKEN": "hf_dont_send_me"}
    path = write_spec(tmp_path / "s.yaml", spec)
    assert main(["trigger", "campaign/adhoc", "--spec", str(path), "--api-url", "http://127.0.0.1:9/api"]) == 2
    err = capsys.readouterr().err
    assert "spec.backends[0].env.HF_TOKEN: looks like a secret" in err and "Secret block" in err
    assert "hf_dont_send_me" not in err
