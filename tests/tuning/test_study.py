"""Tuning studies with plain steps (no processes): feasibility, resume, Pareto, confirm."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from benchflow.tuning.study import run_study
from benchflow.tuning.spec import load_tuning_spec
from tests.tuning.fakes import TuneFakes

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec(**over):
    data = {"name": "t", "model": "m", "allow_simulated": True, "backend": {"name": "sim", "kind": "sim"},
            "search_space": {"max-num-seqs": {"type": "int", "low": 1, "high": 8},
                             "max-num-batched-tokens": {"type": "int", "low": 1, "high": 8}},
            "workload": {"dataset": "D(8,4)", "load_points": [{"concurrency": 2}], "max_requests": 2},
            "objective": {"load_point": "c2", "metrics": {"output_throughput": "maximize"}},
            "trials": {"count": 6}, "sampler": {"name": "random", "seed": 3}}
    data.update(over)
    return load_tuning_spec(data)


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_broken_flag_constraint_is_infeasible_and_never_deployed(storage):
    s = spec(constraints=["max-num-batched-tokens >= max-num-seqs"], trials={"count": 10})
    fakes = TuneFakes()
    out = run_study(s, storage, fakes.steps_for, study_id="s1")
    study = optuna.load_study(study_name="s1", storage=storage)
    broken = [t for t in study.trials if t.params["max-num-batched-tokens"] < t.params["max-num-seqs"]]
    assert broken, "the seed samples at least one broken configuration"
    for t in broken:
        assert t.state == TrialState.COMPLETE and t.user_attrs["measured"] is False
        assert t.user_attrs["infeasible"].startswith("flag constraint broken")
        assert t.constraints["flags: max-num-batched-tokens >= max-num-seqs"] > 0
    assert len(fakes.deploys) == 10 - len(broken)
    assert all(f["max-num-batched-tokens"] >= f["max-num-seqs"] for f in fakes.deploys)
    assert out.finished == 10


def test_start_failure_is_infeasible_with_the_log_tail_and_the_study_goes_on(storage):
    fakes = TuneFakes(fail_start=lambda f: f["max-num-seqs"] > 5)
    run_study(spec(trials={"count": 8}), storage, fakes.steps_for, study_id="s2")
    study = optuna.load_study(study_name="s2", storage=storage)
    failed = [t for t in study.trials if t.params["max-num-seqs"] > 5]
    assert failed and len(study.trials) == 8
    for t in failed:
        assert t.constraints["deployed"] == 1.0
        assert "never became ready" in t.user_attrs["infeasible"]
        assert "CUDA out of memory" in t.user_attrs["infeasible"]
    best = study.best_trials
    assert best and all(t.params["max-num-seqs"] <= 5 for t in best), "infeasible trials never win"


def test_slo_violation_is_infeasible_not_penalized(storage):
    s = spec(slo={"ttft": {"p99": "45ms"}}, trials={"count": 8})
    run_study(s, storage, TuneFakes().steps_for, study_id="s3")
    study = optuna.load_study(study_name="s3", storage=storage)
    over = [t for t in study.trials if t.params["max-num-seqs"] > 4]  # fake TTFT p99 = 10 ms x max-num-seqs
    assert over
    for t in over:
        assert t.constraints["slo: ttft_ms.p99"] > 0 and "SLO violated: ttft_ms.p99" in t.user_attrs["infeasible"]
        assert t.values[0] == float(t.params["max-num-seqs"]), "the measured value is kept, not a penalty"
    assert study.best_trial.params["max-num-seqs"] <= 4


def test_resume_does_not_measure_completed_trials_and_fails_the_interrupted_one(storage):
    s = spec(trials={"count": 3})
    fakes = TuneFakes()
    run_study(s, storage, fakes.steps_for, study_id="s4")
    assert fakes.cells == 3
    study = optuna.load_study(study_name="s4", storage=storage)
    crashed = study.ask()  # a trial left RUNNING, as by kill -9
    crashed.suggest_int("max-num-seqs", 1, 8)
    crashed.suggest_int("max-num-batched-tokens", 1, 8)
    more = spec(trials={"count": 5})
    out = run_study(more, storage, fakes.steps_for, study_id="s4")
    assert fakes.cells == 5, "only the two missing trials are measured"
    study = optuna.load_study(study_name="s4", storage=storage)
    t = study.trials[crashed.number]
    assert t.state == TrialState.FAIL and "interrupted" in t.user_attrs["failed_reason"]
    retry = [x for x in study.trials if x.user_attrs.get("retry_of") == crashed.number]
    assert retry and retry[0].params == crashed.params and retry[0].state == TrialState.COMPLETE
    assert out.ran == 2 and out.finished == 5


def test_two_objectives_give_a_pareto_front(storage):
    s = spec(objective={"load_point": "c2", "metrics": {"output_throughput": "maximize",
                                                         "ttft_ms.p99": "minimize"}},
             trials={"count": 8})
    assert s.sampler_name == "random"
    fakes = TuneFakes(model=lambda f: {"output_throughput": float(f["max-num-seqs"]),
                                       "ttft_ms": {"p99": 10.0 * f["max-num-seqs"] - f["max-num-batched-tokens"]}})
    run_study(s, storage, fakes.steps_for, study_id="s5")
    study = optuna.load_study(study_name="s5", storage=storage)
    front = study.best_trials
    assert len(study.directions) == 2 and len(front) >= 2
    for a in front:  # no member of the front is dominated by another trial
        assert not any(b.values[0] >= a.values[0] and b.values[1] <= a.values[1] and b.values != a.values
                       for b in study.trials)


@pytest.mark.parametrize("gap, verdict", [(3.0, "winner"), (0.0, "tie")])
def test_confirm_names_a_winner_only_when_its_interval_separates_it(storage, gap, verdict):
    from itertools import count

    from benchflow.tuning.confirm import confirm_study

    s = spec(confirm={"top_k": 2, "repetitions": 4}, trials={"count": 8},
             search_space={"max-num-seqs": {"type": "categorical", "choices": [1, 2]}},
             sampler={"name": "grid", "seed": 0})
    ticks = count()
    jitter = [0.0, 0.2, -0.2, 0.1, -0.1, 0.05, -0.05, 0.15]

    def model(f):  # max-num-seqs 2 is better by `gap`, with a little noise per measurement
        return {"output_throughput": 10.0 + (gap if f["max-num-seqs"] == 2 else 0.0) + jitter[next(ticks) % 8]}

    fakes = TuneFakes(model=model)
    out = run_study(s, storage, fakes.steps_for, study_id="c1")
    assert out.stopped_by == "grid exhausted" and out.finished == 2
    study = optuna.load_study(study_name="c1", storage=storage)
    result = confirm_study(study, s, fakes.steps_for)
    assert result["verdict"] == verdict, result["text"]
    assert [len(r["values"]) for r in result["trials"]] == [4, 4]
    assert optuna.load_study(study_name="c1", storage=storage).user_attrs["confirm"]["verdict"] == verdict
    if verdict == "tie":
        assert result["text"].startswith("tie") and "tied configurations" in result["text"]
        assert "{'" not in result["text"] and "=" in result["text"], "flags read as name=value, not a dict repr"


def test_report_has_the_best_configuration_importances_and_the_winning_flags(storage):
    from benchflow.tuning import report

    s = spec(trials={"count": 8}, backend={"name": "sim", "kind": "sim", "engine_args": {"time-scale": 0.5}})
    run_study(s, storage, TuneFakes().steps_for, study_id="r1")
    study = optuna.load_study(study_name="r1", storage=storage)
    md = report.markdown(study)
    best = study.best_trial
    assert "## Best configuration" in md and f"trial {best.number}:" in md
    assert "## Parameter importances (PED-ANOVA)" in md and "- max-num-seqs:" in md
    assert report.winning_flags(study) == {"time-scale": 0.5, **best.params}
    assert report.serve_command(study).startswith("benchflow sim --model m --engine-arg time-scale=0.5 --engine-arg "
                                                  "max-num-seqs=")
    assert report.backend_block(study)["engine_args"]["max-num-seqs"] == best.params["max-num-seqs"]


def test_serve_command_turns_a_flag_tuned_to_false_off_explicitly(storage):
    from benchflow.tuning import report

    s = load_tuning_spec({"name": "v", "model": "meta-llama/Llama-3.1-8B-Instruct",
                          "backend": {"name": "vllm", "kind": "vllm", "engine_args": {"max-model-len": 4096}},
                          "search_space": {"enable-chunked-prefill": {"type": "categorical", "choices": [False]},
                                           "max-num-seqs": {"type": "categorical", "choices": [64]}},
                          "workload": {"dataset": "D(8,4)", "load_points": [{"concurrency": 2}], "max_requests": 2},
                          "objective": {"load_point": "c2", "metrics": {"output_throughput": "maximize"}},
                          "trials": {"count": 1}})
    run_study(s, storage, TuneFakes().steps_for, study_id="v1")
    study = optuna.load_study(study_name="v1", storage=storage)
    assert report.serve_command(study) == ("vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 4096 "
                                           "--max-num-seqs 64 --no-enable-chunked-prefill")


def test_a_backend_that_dies_mid_trial_makes_it_infeasible_with_the_crash_and_is_not_redeployed(storage):
    fakes = TuneFakes(dies=lambda f: f["max-num-seqs"] == 3)
    s = spec(search_space={"max-num-seqs": {"type": "categorical", "choices": [2, 3]}},
             sampler={"name": "grid", "seed": 0}, repetitions=2)
    run_study(s, storage, fakes.steps_for, study_id="d1")
    study = optuna.load_study(study_name="d1", storage=storage)
    died = next(t for t in study.trials if t.params["max-num-seqs"] == 3)
    assert died.constraints["deployed"] == 1.0 and died.user_attrs["measured"] is False
    assert "illegal memory access" in died.user_attrs["infeasible"]
    assert [f["max-num-seqs"] for f in fakes.deploys].count(3) == 1, "a dead configuration is not deployed again"
    assert study.best_trial.params["max-num-seqs"] == 2
