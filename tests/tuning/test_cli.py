"""`benchflow tune` end to end: the simulator over real HTTP, SQLite under BENCHFLOW_HOME."""

from __future__ import annotations

import json
import sqlite3

import optuna
import pytest
import yaml

from benchflow.cli import main

SPEC = {"name": "tiny-tune", "model": "sim-model", "allow_simulated": True,
        "backend": {"name": "sim", "kind": "sim", "ready_timeout_s": "60s"},
        "search_space": {"gpu-memory-utilization": {"type": "categorical", "choices": [0.1, 0.9]},
                         "max-num-seqs": {"type": "categorical", "choices": [4]}},
        "workload": {"dataset": "D(32,8)", "seed": 1, "load_points": [{"concurrency": 2}], "max_requests": 4},
        "objective": {"load_point": "c2", "metrics": {"output_throughput": "maximize"}},
        "slo": {"ttft": {"p99": "30s"}},
        "sampler": {"name": "grid", "seed": 1}, "trials": {"count": 2}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    return tmp_path / "home"


def _trial_campaigns(home) -> list[str]:
    with sqlite3.connect(home / "benchflow.db") as db:
        return [r[0] for r in db.execute("select id from campaigns where kind = 'tuning-trial' order by id")]


def test_tune_runs_trials_on_the_simulator_records_oom_as_infeasible_and_resumes(home, tmp_path, capsys):
    spec = tmp_path / "tune.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert main(["tune", str(spec), "--study-id", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "# Tuning study tiny" in out and "## Best configuration" in out
    charts = home / "artifacts" / "studies" / "tiny" / "charts"
    assert (charts / "tuning-history.svg").read_text().lstrip().startswith("<?xml"), "the CLI stores the study's charts too"
    storage = f"sqlite:///{home / 'benchflow-optuna.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    by_util = {t.params["gpu-memory-utilization"]: t for t in study.trials}
    assert set(by_util) == {0.1, 0.9}
    oom = by_util[0.1]
    assert oom.user_attrs["measured"] is False and oom.constraints["deployed"] == 1.0
    assert "No available memory for the cache blocks" in oom.user_attrs["infeasible"]
    ok = by_util[0.9]
    assert ok.user_attrs["measured"] and not ok.user_attrs.get("infeasible") and ok.values[0] > 0
    assert study.best_trial.number == ok.number
    assert _trial_campaigns(home) == ["tiny-t0", "tiny-t1"], "each trial is a stored campaign"
    with sqlite3.connect(home / "benchflow.db") as db:
        cells = db.execute("select status from cells where campaign_id = ?", (ok.user_attrs["campaign_id"],)).fetchall()
    assert cells == [("completed",)] and ok.user_attrs["cell_ids"]

    # resume: the two finished trials are not measured again; a third (count raised) is
    spec.write_text(yaml.safe_dump({**SPEC, "sampler": {"name": "random", "seed": 2}, "trials": {"count": 3}}))
    assert main(["tune", str(spec), "--study-id", "tiny"]) == 0
    capsys.readouterr()
    assert len(_trial_campaigns(home)) == 3

    assert main(["tune", "report", "tiny"]) == 0
    report = capsys.readouterr().out
    assert "No available memory for the cache blocks" in report and "--engine-arg gpu-memory-utilization=0.9" in report
    target = tmp_path / "backend.yaml"
    assert main(["tune", "apply", "tiny", "--out", str(target)]) == 0
    block = yaml.safe_load(target.read_text())
    assert block["backends"][0]["engine_args"] == {"gpu-memory-utilization": 0.9, "max-num-seqs": 4}
    assert block["backends"][0]["kind"] == "sim"
    as_json = tmp_path / "backend.json"
    assert main(["tune", "apply", "tiny", "--out", str(as_json)]) == 0
    assert json.loads(as_json.read_text())["backends"][0]["name"] == "sim-tuned"


def test_tune_with_a_bad_spec_exits_2_before_anything_runs(home, tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "objective": {"load_point": "c3", "metrics": {"x": "maximize"}}}))
    assert main(["tune", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "objective.metrics.x" in err
    assert not (home / "benchflow-optuna.db").exists()
