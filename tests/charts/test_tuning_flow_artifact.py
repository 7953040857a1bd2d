"""The `tune` flow's markdown report artifact carries the tuning charts (issue 15): read back
through the Prefect API, it holds the optimisation history and the importances as SVG data URIs,
and the same files are stored under ``studies/<id>/charts/`` in the artifact store.

Two trials on the simulator over real HTTP (the spec of tests/tuning/test_cli.py: one start fails
out of memory, one is measured), on a throwaway Prefect server.
"""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from tests.flows.conftest import home  # noqa: F401 - fixtures
from tests.tuning.test_cli import SPEC

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def test_the_tune_report_artifact_embeds_the_charts_and_they_are_stored_under_the_study(home, tmp_path):  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from benchflow.store.results import Results
    from flows.tune import tune

    spec = tmp_path / "tune.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    state = tune(spec=str(spec), study_id="chartflow", return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            "tune-chartflow-report"])))
    assert len(found) == 1
    md = found[0].data
    uris = re.findall(r"!\[([^\]]+)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", md)
    assert [alt for alt, _ in uris] == ["tuning history", "tuning importances"], "one objective: no Pareto chart"
    history, importances = (base64.b64decode(u).decode() for _, u in uris)
    assert 'id="series-history-output_throughput-feasible"' in history
    assert 'id="series-history-output_throughput-not-measured"' in history  # the out-of-memory start
    assert "need at least 5 measured trials" in importances  # two trials: a note, not a crash
    stored = Results.from_env().artifacts
    keys = sorted(stored.list("studies/chartflow/charts"))
    assert [k.rsplit("/", 1)[-1] for k in keys] == ["tuning-history.svg", "tuning-importances.svg"]
    assert stored.get_bytes("studies/chartflow/charts/tuning-history.svg").decode() == history
