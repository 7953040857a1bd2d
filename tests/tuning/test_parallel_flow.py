"""``parallel: 2`` in the tune flow: two simulator trials at once, each holding its own GPU slot
(Prefect's global concurrency limits, as campaigns hold them)."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.flows.conftest import home  # noqa: F401 - fixtures
from tests.tuning.test_cli import SPEC
from tests.tuning.test_parallel import _overlapping_pairs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

PARALLEL = {**SPEC, "name": "par-tune", "parallel": 2,
            "backend": {**SPEC["backend"], "gpu_slots": [0], "engine_args": {"time-scale": 0.5}},
            "search_space": {"max-num-seqs": {"type": "categorical", "choices": [2, 4, 6, 8]}},
            "workload": {**SPEC["workload"], "max_requests": 6},
            "sampler": {"name": "random", "seed": 4}, "trials": {"count": 4}}


def test_two_trials_run_at_once_in_the_flow_each_on_its_own_gpu_slot(home, tmp_path, monkeypatch):  # noqa: F811
    from flows.tune import tune

    monkeypatch.setenv("BENCHFLOW_GPU_HOST", "partune")
    monkeypatch.setenv("BENCHFLOW_GPU_COUNT", "2")
    spec = tmp_path / "tune.yaml"
    spec.write_text(yaml.safe_dump(PARALLEL))
    state = tune(spec=str(spec), study_id="partune", return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert out["finished"] == 4 and out["stopped_by"] == "count"
    study = optuna.load_study(study_name="partune", storage=f"sqlite:///{home / 'benchflow-optuna.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4 and all(t.user_attrs["measured"] for t in done), [t.user_attrs for t in done]
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    held = [t.user_attrs["gpu_slots"] for t in done]
    assert {h["slots"][0] for h in held} == {"gpu-partune-0", "gpu-partune-1"}
    for i, a in enumerate(held):
        for b in held[i + 1:]:
            if a["slots"] == b["slots"]:
                assert a["released"] <= b["acquired"] or b["released"] <= a["acquired"], (a, b)
    assert _overlapping_pairs(done), "two trials ran at the same time"
