"""The tuning charts on studies made by benchflow's own study loop, measured by the virtual-time
simulator (``benchflow.sim.virtual``: the simulator's engine without HTTP, so a 20-trial study
takes seconds): optimisation history, Pareto front, parameter importances; the report embeds them
and they are stored under the study."""

from __future__ import annotations

import functools
import re
from typing import Any

import optuna
import pytest

from benchflow.charts import tuning as tc
from benchflow.errors import BenchflowError
from benchflow.sim.config import build_engine_config, load_sim_config
from benchflow.sim.virtual import VirtualRequest, run_closed_loop
from benchflow.tuning import report
from benchflow.tuning.spec import load_tuning_spec
from benchflow.tuning.study import run_study
from tests.tuning.fakes import TuneFakes

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: The demo study's search space (deployments/tuning/demo.yaml).
DEMO_SPACE = {"max-num-seqs": {"type": "int", "low": 4, "high": 64, "log": True},
              "max-num-batched-tokens": {"type": "categorical", "choices": [256, 512, 1024, 2048, 4096]},
              "enable-chunked-prefill": {"type": "bool"},
              "gpu-memory-utilization": {"type": "float", "low": 0.1, "high": 0.9, "step": 0.1}}
THROUGHPUT_AND_TTFT = {"output_throughput": "maximize", "ttft_ms.p99": "minimize"}


@functools.lru_cache(maxsize=None)
def _virtual(items: tuple) -> dict[str, Any] | None:
    """A cell summary of the simulator at ``flags`` (64 requests D(512,64) at c32), or None when
    the simulator would exit at start-up (out of memory)."""
    try:
        config = build_engine_config(load_sim_config({}, dict(items)))
    except BenchflowError:
        return None
    run = run_closed_loop(config, [VirtualRequest(512, 64)] * 64, 32)
    return {"output_throughput": run.output_throughput, "ttft_ms": {"p99": run.percentile("ttft_s", 99) * 1e3},
            "tpot_ms": {"p99": run.percentile("tpot_s", 99) * 1e3}}


def virtual_fakes() -> TuneFakes:
    """Plain trial steps whose cells are measured by the virtual-time simulator; a configuration
    the simulator cannot start (too little gpu-memory-utilization) fails to start."""
    key = lambda flags: tuple(sorted(flags.items()))  # noqa: E731
    return TuneFakes(model=lambda f: _virtual(key(f)), fail_start=lambda f: _virtual(key(f)) is None)


def virtual_spec(**over: Any) -> Any:
    data = {"name": "vt", "model": "sim-llama-8b", "allow_simulated": True, "backend": {"name": "sim", "kind": "sim"},
            "search_space": DEMO_SPACE, "constraints": ["max-num-batched-tokens >= max-num-seqs"],
            "workload": {"dataset": "D(512,64)", "load_points": [{"concurrency": 32}], "max_requests": 64},
            "objective": {"load_point": "c32", "metrics": {"output_throughput": "maximize"}},
            "slo": {"ttft": {"p99": "2500ms"}, "tpot": {"p99": "60ms"}},
            "sampler": {"name": "random", "seed": 7}, "trials": {"count": 20}}
    data.update(over)
    return load_tuning_spec(data)


def virtual_study(storage: str, study_id: str, **over: Any) -> optuna.Study:
    run_study(virtual_spec(**over), storage, virtual_fakes().steps_for, study_id=study_id)
    return optuna.load_study(study_name=study_id, storage=storage)


def paths_of(svg: str, gid: str) -> list[str]:
    """The ``d`` of the paths (or the ids of the marker uses) inside ``<g id=gid>``."""
    m = re.search(rf'<g id="{re.escape(gid)}"[^>]*>(.*?)</g>', svg, re.S)
    assert m, f"no <g id={gid!r}>"
    return re.findall(r'<path[^>]* d="([^"]+)"', m.group(1)) + re.findall(r'<use xlink:href="#([^"]+)"', m.group(1))


@pytest.fixture(scope="module")
def one_objective(tmp_path_factory) -> optuna.Study:
    return virtual_study(f"sqlite:///{tmp_path_factory.mktemp('tc') / 'o.db'}", "one")


@pytest.fixture(scope="module")
def two_objectives(tmp_path_factory) -> optuna.Study:
    return virtual_study(f"sqlite:///{tmp_path_factory.mktemp('tc') / 't.db'}", "two",
                         objective={"load_point": "c32", "metrics": THROUGHPUT_AND_TTFT}, trials={"count": 24})


def test_the_history_marks_each_kind_of_trial_and_draws_the_best_so_far(one_objective):
    kinds = [tc.trial_kind(t) for t in one_objective.trials]
    assert {tc.FEASIBLE, tc.INFEASIBLE, tc.NOT_MEASURED} <= set(kinds), kinds  # the seed gives all three
    svg = tc.history_svg(one_objective)
    for kind in (tc.FEASIBLE, tc.INFEASIBLE, tc.NOT_MEASURED, "best"):
        assert paths_of(svg, f"series-history-output_throughput-{kind}"), kind
    # the best-so-far line only ever rises (maximize) and ends at the best feasible value
    best = max(t.values[0] for t in one_objective.trials if tc.trial_kind(t) == tc.FEASIBLE)
    assert report.chosen_trial(one_objective).values[0] == best
    assert "infeasible (SLO violated)" in svg and "not measured" in svg and "best feasible so far" in svg
    assert tc.history_svg(one_objective) == svg, "deterministic"
    assert len(svg.encode()) < 80_000


def test_unmeasured_trials_are_never_plotted_at_their_placeholder_value(one_objective):
    """An unmeasured trial is told the worst value so far (for the GP sampler); the history puts it
    on the axis instead, so the placeholder never looks like a measurement."""
    unmeasured = [t for t in one_objective.trials if tc.trial_kind(t) == tc.NOT_MEASURED]
    assert unmeasured and all(t.values for t in unmeasured)
    svg = tc.history_svg(one_objective)
    group = re.search(r'<g id="series-history-output_throughput-not-measured"[^>]*>(.*?)</g>', svg, re.S).group(1)
    ys = {round(float(y), 1) for y in re.findall(r'<use [^>]*y="([-\d.]+)"', group)}
    assert len(ys) == 1, "every unmeasured trial sits on the same line: the bottom of the axes"


def test_the_pareto_front_is_highlighted_and_holds_only_non_dominated_feasible_trials(two_objectives):
    svg = tc.pareto_svg(two_objectives)
    assert paths_of(svg, "series-pareto-front") and paths_of(svg, "series-pareto-dominated")
    feasible = [(t.number, *t.values) for t in two_objectives.trials if tc.trial_kind(t) == tc.FEASIBLE]
    front = tc.pareto_front(feasible, ["maximize", "minimize"])
    assert front and {t.number for t in report.feasible_best(two_objectives)} == set(front), \
        "the chart's front is Optuna's (feasible) best_trials"
    for number in front:
        assert f"#{number}<" in svg or f"#{number}" in svg


def test_pareto_front_respects_each_direction():
    pts = [("a", 1.0, 1.0), ("b", 2.0, 2.0), ("c", 2.0, 1.0), ("d", 0.5, 0.5)]
    assert tc.pareto_front(pts, ["maximize", "minimize"]) == ["c", "d"]
    assert tc.pareto_front(pts, ["maximize", "maximize"]) == ["b"]
    assert tc.pareto_front(pts, ["minimize", "minimize"]) == ["d"]
    assert tc.pareto_front(pts, ["minimize", "maximize"]) == ["a", "b", "d"]
    assert tc.pareto_front([("x", 1.0, 1.0), ("y", 1.0, 1.0)], ["maximize", "minimize"]) == ["x", "y"]  # equal


def test_importances_name_the_evaluator_and_follow_each_objective():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        trial.set_user_attr("measured", True)
        return trial.suggest_int("a", 1, 8), trial.suggest_float("b", 0, 1)

    study.optimize(objective, n_trials=30)
    study.set_user_attr("objectives", ["throughput", "latency"])
    imp = tc.param_importances(study)
    assert list(imp.by_objective) == ["throughput", "latency"] and imp.n_trials == 30
    assert max(imp.by_objective["throughput"], key=imp.by_objective["throughput"].get) == "a"
    assert max(imp.by_objective["latency"], key=imp.by_objective["latency"].get) == "b"
    svg = tc.importances_svg(imp)
    for metric in ("throughput", "latency"):
        for param in ("a", "b"):
            assert paths_of(svg, f"series-importance-{metric}-{param}")
    assert "PED-ANOVA" in svg and "30 feasible measured trials" in svg


def test_with_too_few_feasible_trials_importances_use_every_measured_trial_and_say_so(one_objective):
    feasible = sum(tc.trial_kind(t) == tc.FEASIBLE for t in one_objective.trials)
    measured = sum(tc.trial_kind(t) in (tc.FEASIBLE, tc.INFEASIBLE) for t in one_objective.trials)
    assert feasible < measured
    imp = tc.param_importances(one_objective, min_trials=feasible + 1)
    assert imp.n_trials == measured and imp.by_objective["output_throughput"]
    assert f"{measured} measured (SLO breakers included: {feasible} feasible) trials" in imp.describe()
    assert "SLO breakers included" in tc.importances_svg(imp)
    assert tc.param_importances(one_objective).n_trials == feasible


def test_too_few_measured_trials_give_a_note_not_a_crash(tmp_path):
    study = virtual_study(f"sqlite:///{tmp_path / 'few.db'}", "few", trials={"count": 3},
                          sampler={"name": "random", "seed": 1})
    imp = tc.param_importances(study)
    assert not imp.by_objective and "need at least 5 measured trials; this study has" in imp.note
    svg = tc.importances_svg(imp)
    assert "need at least 5 measured trials" in svg and "series-importance" not in svg
    md = report.markdown(study, charts=report.study_charts(study))
    assert "## Parameter importances (PED-ANOVA)" in md and imp.note in md
    empty = optuna.create_study()
    assert "no finished trial yet" in tc.history_svg(empty)
    assert "need at least 5" in tc.importances_svg(tc.param_importances(empty))


def test_the_report_embeds_the_charts_and_they_are_stored_under_the_study(two_objectives, tmp_benchflow_home):
    from benchflow.store.results import Results

    results = Results.from_env()
    results.upgrade()
    charts = report.study_charts(two_objectives, results)
    assert list(charts) == [tc.HISTORY, tc.PARETO, tc.IMPORTANCES]
    stored = results.artifacts.list("studies/two/charts")
    assert sorted(k.rsplit("/", 1)[-1] for k in stored) == sorted(charts)
    assert results.artifacts.get_bytes("studies/two/charts/tuning-history.svg").decode() == charts[tc.HISTORY]
    md = report.markdown(two_objectives, charts=charts)
    assert md.count("](data:image/svg+xml;base64,") == 3 and "![tuning pareto](data:" in md
    assert "## Pareto front" in md and "- output_throughput:" in md and "- ttft_ms.p99:" in md
    assert "data:image" not in report.markdown(two_objectives), "the terminal report has no images"


def test_apply_uses_the_confirmations_winner_when_it_differs_from_the_search_best(one_objective, tmp_path):
    """The confirmation re-measures the top k; when it names a winner that the search ranked
    second, that winner is what `tune apply` and the report hand out."""
    feasible = sorted((t for t in one_objective.trials if tc.trial_kind(t) == tc.FEASIBLE),
                      key=lambda t: -t.values[0])
    first, second = feasible[0], feasible[1]
    copy = optuna.create_study(study_name="copy", storage=f"sqlite:///{tmp_path / 'c.db'}",
                               directions=one_objective.directions)
    for key, value in one_objective.user_attrs.items():
        copy.set_user_attr(key, value)
    copy.add_trials(one_objective.trials)
    copy.set_user_attr("confirm", {"verdict": "winner", "text": f"winner: trial {second.number}", "trials": [
        {"trial": first.number, "params": first.params, "values": [100.0, 101.0, 99.0]},
        {"trial": second.number, "params": second.params, "values": [200.0, 201.0, 199.0]}]})
    assert report.chosen_trial(copy).number == second.number
    assert report.winning_flags(copy) == second.user_attrs["flags"]
    html = report.render_html(copy, charts={})
    assert f"Winner: trial {second.number} (" in html


def test_a_study_without_a_feasible_trial_still_reports_with_its_charts(tmp_path):
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    s = virtual_spec(trials={"count": 3}, sampler={"name": "random", "seed": 2})
    run_study(s, storage, TuneFakes(fail_start=lambda f: True).steps_for, study_id="none")
    study = optuna.load_study(study_name="none", storage=storage)
    assert report.chosen_trial(study) is None
    charts = report.study_charts(study)
    assert paths_of(charts[tc.HISTORY], "series-history-output_throughput-not-measured")
    assert "series-history-output_throughput-best" not in charts[tc.HISTORY]
    md = report.markdown(study, charts=charts)
    assert "No feasible configuration yet." in md and md.count("](data:image/svg+xml;base64,") == 2
    html = report.render_html(study, charts)
    assert 'class="answer none"' in html and "No feasible configuration yet" in html
    assert '<pre id="serve-command">' not in html and html.count("<svg") == 2
    with pytest.raises(BenchflowError, match="no feasible trial yet"):
        report.winning_flags(study)
