"""The ``slo_capacity`` objective: each trial runs the campaign's SLO-capacity search
(engine/dynamic.py + stats/capacity.py) and reports the capacity (req/s) as its value."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from benchflow.cli import main
from benchflow.errors import SpecError
from benchflow.tuning.spec import load_tuning_spec
from benchflow.tuning.study import CAPACITY_CONSTRAINT, run_study
from benchflow.tuning.virtual import evaluate_config, virtual_steps

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEQS = [1, 2, 4, 8, 32]


def data(**over):
    d = {"name": "cap", "model": "sim-llama-8b", "allow_simulated": True, "backend": {"name": "sim", "kind": "sim"},
         "search_space": {"max-num-seqs": {"type": "categorical", "choices": SEQS}},
         "workload": {"dataset": "D(256,32)", "seed": 3, "max_requests": 40, "request_timeout_s": "30s",
                      "load_points": [{"concurrency": 4},
                                      {"slo_capacity": {"min_rate": 4, "max_rate": 64, "precision": 0.1, "arrival": "constant"}}]},
         "objective": {"load_point": "slocap", "metrics": {"slo_capacity": "maximize"}},
         "slo": {"ttft": {"p99": "300ms"}},
         "sampler": {"name": "grid", "seed": 1}, "trials": {"count": len(SEQS)}}
    d.update(over)
    return d


def test_slo_capacity_needs_an_slo_capacity_load_point_and_the_other_way_round():
    with pytest.raises(SpecError) as e:
        load_tuning_spec(data(objective={"load_point": "c4", "metrics": {"slo_capacity": "maximize"}}))
    assert e.value.problems[0].startswith("objective.metrics.slo_capacity: needs an slo_capacity load point; "
                                          "objective.load_point 'c4' is not one")
    with pytest.raises(SpecError) as e:
        load_tuning_spec(data(objective={"load_point": "slocap", "metrics": {"output_throughput": "maximize",
                                                                             "slo_capacity": "minimize"}}))
    assert [p.split(":")[0] for p in e.value.problems] == ["objective.metrics.output_throughput",
                                                           "objective.metrics.slo_capacity"]
    assert "is an slo_capacity search, whose objective is slo_capacity" in e.value.problems[0]


def test_the_study_finds_the_configuration_with_the_highest_capacity():
    spec = load_tuning_spec(data())
    truth = {n: evaluate_config(spec, {"max-num-seqs": n}, virtual_steps()) for n in SEQS}
    feasible = {n: e.values[0] for n, e in truth.items() if e.feasible}
    assert len(feasible) >= 3 and len(set(feasible.values())) == len(feasible), feasible
    assert not truth[1].feasible and truth[1].constraints[CAPACITY_CONSTRAINT] == 1.0
    assert truth[1].attrs["infeasible"].startswith("no sustainable rate under the SLO: even min_rate 4 req/s")

    cells: dict[str, list[str]] = {}
    storage = optuna.storages.InMemoryStorage()
    run_study(spec, storage, virtual_steps(on_cell=lambda cid, row, summary: cells.setdefault(cid, []).append(
        row["cell_id"])), study_id="cap")
    study = optuna.load_study(study_name="cap", storage=storage)
    best = study.best_trial
    assert best.params["max-num-seqs"] == max(feasible, key=feasible.get)
    assert best.values[0] == pytest.approx(max(feasible.values())), "the same code as the exhaustive evaluation"
    assert best.user_attrs["capacity"]["status"] == "found" and best.user_attrs["capacity"]["mean"] == best.values[0]
    # the confirmation re-runs the search with 3 repetitions: each repetition's capacity is a sample
    from benchflow.tuning.confirm import confirm_study

    confirm = confirm_study(study, load_tuning_spec(data(confirm={"top_k": 2, "repetitions": 3})), virtual_steps())
    assert confirm["verdict"] == "winner" and confirm["trials"][0]["trial"] == best.number
    assert all(len(r["values"]) == 3 for r in confirm["trials"])
    for t in study.trials:  # every cell, the probes too, is stored and linked to its trial
        stored = cells[t.user_attrs["campaign_id"]]
        assert len(stored) >= 2 and t.user_attrs["cell_ids"] == stored
        assert len(stored) == 1 + t.user_attrs["capacity"]["probes"], "the c4 cell and the search's probes"


def test_a_capacity_above_max_rate_counts_at_max_rate_with_a_note():
    spec = load_tuning_spec(data(workload={**data()["workload"], "load_points": [
        {"slo_capacity": {"min_rate": 0.5, "max_rate": 2, "precision": 0.1, "arrival": "constant"}}]}))
    e = evaluate_config(spec, {"max-num-seqs": 32}, virtual_steps())
    assert e.feasible and e.values == [2.0] and e.attrs["capacity"]["status"] == "above_max"
    assert e.attrs["capacity_note"].startswith("capacity above max_rate 2 req/s: counted at max_rate")


REAL = {"name": "cap-http", "model": "sim-model", "allow_simulated": True,
        # time-scale 10: 80 ms steps, so a request takes ~0.5 s and the capacities are a few req/s
        "backend": {"name": "sim", "kind": "sim", "ready_timeout_s": "60s", "engine_args": {"time-scale": 10}},
        "search_space": {"max-num-seqs": {"type": "categorical", "choices": [2, 16]}},
        "workload": {"dataset": "D(32,4)", "seed": 1, "max_requests": 6, "request_timeout_s": "20s",
                     "load_points": [{"slo_capacity": {"min_rate": 2, "max_rate": 32, "precision": 0.5,
                                                       "max_probes": 8, "arrival": "constant"}}]},
        "objective": {"load_point": "slocap", "metrics": {"slo_capacity": "maximize"}},
        "slo": {"e2e": {"p99": "1s"}},
        "sampler": {"name": "grid", "seed": 1}, "trials": {"count": 2}}


def test_real_trials_report_the_stored_capacity(tmp_path, monkeypatch, capsys):
    """Over real HTTP with the simulator, on the embedded default (SQLite + files under BENCHFLOW_HOME)."""
    home = tmp_path / "home"
    monkeypatch.setenv("BENCHFLOW_HOME", str(home))
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    spec = tmp_path / "tune.yaml"
    spec.write_text(yaml.safe_dump(REAL))
    assert main(["tune", str(spec), "--study-id", "caphttp"]) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="caphttp", storage=f"sqlite:///{home / 'benchflow-optuna.db'}")
    measured = [t for t in study.trials if t.user_attrs.get("measured")]
    assert measured, [t.user_attrs.get("infeasible") for t in study.trials]
    import sqlite3

    for t in measured:
        cid = t.user_attrs["campaign_id"]
        stored = json.loads((home / "artifacts" / "campaigns" / cid / "capacity-sim-slocap.json").read_text())
        expected = stored["capacity_rps"] if stored["status"] == "found" else 32.0 if stored["status"] == "above_max" \
            else stored["bracket"][0]
        assert t.values[0] == pytest.approx(expected), (stored["status"], stored["message"])
        with sqlite3.connect(home / "benchflow.db") as db:
            rows = db.execute("select cell_id from cells where campaign_id = ?", (cid,)).fetchall()
        assert sorted(r[0] for r in rows) == sorted(t.user_attrs["cell_ids"]), "the probe cells are stored"
        assert len(rows) == len(stored["probes"]) == t.user_attrs["capacity"]["probes"]
        assert {p["cell_id"] for p in stored["probes"]} == set(t.user_attrs["cell_ids"])
