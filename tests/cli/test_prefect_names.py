"""Names in the Prefect UI, read back from the API: the flow run is named after the campaign, and
the deploy, run-cell, persist and teardown task runs carry the backend, load point and repetition."""

from __future__ import annotations

import re

import pytest

from tests.flows.conftest import home, sim_backend, write_spec  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def test_flow_and_task_run_names(tmp_path, home):  # noqa: F811 - the fixture
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.campaign import campaign

    path = write_spec(tmp_path, [sim_backend("small")], load_points=[{"concurrency": 2}], repetitions=2,
                      max_requests=3, name="demo-max-num-seqs")
    state = campaign(spec=str(path), return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert re.fullmatch(r"demo-max-num-seqs · \d{8}-\d{4}", run.name), run.name
    names = {t.name for t in tasks}
    expected = {"deploy-small", "teardown-small", "persist-backend-log-small",
                "run-cell-small-c2-rep0", "run-cell-small-c2-rep1",
                "persist-cell-small-c2-rep0", "persist-cell-small-c2-rep1"}
    assert expected <= names, sorted(names)


def test_run_name_falls_back_when_the_spec_cannot_be_read():
    from unittest import mock

    import flows.campaign as fc

    with mock.patch.object(fc, "current_run") as current:
        current.parameters = {"spec": "/no/such/spec.yaml"}
        assert re.fullmatch(r"campaign · \d{8}-\d{4}", fc.run_name())
        current.parameters = {"spec": {"name": "x"}}
        assert fc.run_name("nightly · ").startswith("nightly · x · ")


def test_artifact_keys_are_per_campaign_name_and_keep_their_kind():
    from tasks.artifacts import campaign_key

    assert campaign_key("Demo max-num-seqs", "report") == "campaign-demo-max-num-seqs-report"
    long = campaign_key("x" * 300, "comparisons")
    assert len(long) <= 100 and long.endswith("-comparisons") and long.startswith("campaign-xxx")
