"""A spec posted as a flow-run parameter (REST create_flow_run, run_deployment) is checked by
benchflow's loader: the run fails at once, naming the spec's own fields, never pydantic internals."""

from __future__ import annotations

import pytest

from flows.campaign import campaign

pytestmark = pytest.mark.integration


def test_a_spec_dict_breaking_a_cross_field_rule_fails_with_the_spec_field_named(prefect_harness, home):
    spec = {
        "name": "dup", "model": {"name": "m"},  # no allow_simulated, and a duplicate name
        "backends": [{"name": "a", "kind": "sim"}, {"name": "a", "kind": "sim"}],
        "workload": {"dataset": "D(8", "load_points": [{"concurrency": 1}], "max_requests": 2},
    }
    state = campaign(spec=spec, return_state=True)
    assert state.is_failed()
    message = str(state.message) + str(state.result(raise_on_failure=False))
    assert "backends[1].name" in message and "allow_simulated" in message and "workload.dataset" in message
    assert "function-after" not in message and "CampaignSpec]" not in message
    assert not (home / "benchflow.db").exists() or "dup-" not in (home / "benchflow.db").read_bytes().decode(
        errors="ignore")
