"""The `tune` Prefect flow: the same library entry, with Prefect tasks as the engine's steps."""

from __future__ import annotations

import optuna
import pytest
import yaml

from tests.flows.conftest import home  # noqa: F401 - fixtures
from tests.tuning.test_cli import SPEC

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def test_tune_flow_runs_trials_through_prefect_tasks_and_publishes_artifacts(home, tmp_path):  # noqa: F811
    from prefect.artifacts import Artifact

    from flows.tune import tune

    spec = tmp_path / "tune.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    state = tune(spec=str(spec), study_id="flowtune", return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert out == {"study_id": "flowtune", "ran": 2, "finished": 2, "stopped_by": "count"}
    study = optuna.load_study(study_name="flowtune", storage=f"sqlite:///{home / 'benchflow-optuna.db'}")
    oom = next(t for t in study.trials if t.params["gpu-memory-utilization"] == 0.1)
    assert "No available memory for the cache blocks" in oom.user_attrs["infeasible"]
    assert study.best_trial.params["gpu-memory-utilization"] == 0.9
    for key in ("tune-flowtune-progress", "tune-flowtune-trials", "tune-flowtune-report"):
        assert Artifact.get(key) is not None, key
