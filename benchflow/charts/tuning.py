"""Charts of a tuning study as deterministic SVG, drawn like the campaign charts (:mod:`.svg`).

- :func:`history_svg` — each trial's objective value by trial number, the best feasible value so
  far as a step line; trials that broke the SLO are crosses, trials never measured (a broken flag
  constraint, a failed start, a backend that died, an interrupted trial) are triangles on the axis.
- :func:`pareto_svg` — two objectives: the Pareto front of the feasible trials highlighted, the
  dominated ones grey, those that broke the SLO as crosses.
- :func:`importances_svg` — parameter importances (``optuna.importance.get_param_importances``
  with PED-ANOVA, named in the chart) over the feasible measured trials (every measured trial when
  too few are feasible, said so); with too few measured trials the chart says so instead.

A trial's kind comes from the user attrs :mod:`benchflow.tuning.study` sets (``measured``,
``infeasible``): an unmeasured trial carries a placeholder value for the sampler, never plotted.
Series ids: ``series-history-<metric>-{feasible,infeasible,not-measured,best}``,
``series-pareto-{front,dominated,infeasible}``, ``series-importance-<metric>-<param>``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory
from optuna.trial import FrozenTrial, TrialState

from benchflow.charts.svg import new_figure, series_id, to_svg
from benchflow.store import keys

HISTORY = "tuning-history.svg"
PARETO = "tuning-pareto.svg"
IMPORTANCES = "tuning-importances.svg"
CHARTS_DIR = "charts"

FEASIBLE, INFEASIBLE, NOT_MEASURED = "feasible", "infeasible", "not-measured"
#: Colours and markers of the three kinds of trials (the same in every chart).
STYLE = {FEASIBLE: ("#1f77b4", "o"), INFEASIBLE: ("#d62728", "x"), NOT_MEASURED: ("#7f7f7f", "v")}
LABEL = {FEASIBLE: "feasible", INFEASIBLE: "infeasible (SLO violated)",
         NOT_MEASURED: "not measured (constraint broken, start failed, died or interrupted)"}
FRONT_COLOR = "#ff7f0e"

#: PED-ANOVA needs this many feasible measured trials before its importances mean anything.
MIN_IMPORTANCE_TRIALS = 5
EVALUATOR = "PED-ANOVA"


def trial_kind(t: FrozenTrial) -> str | None:
    """feasible, infeasible (measured, SLO broken), not-measured; None for a trial still running."""
    if t.state in (TrialState.RUNNING, TrialState.WAITING):
        return None
    if t.state != TrialState.COMPLETE or not t.user_attrs.get("measured") or not t.values:
        return NOT_MEASURED
    return INFEASIBLE if t.user_attrs.get("infeasible") else FEASIBLE


def objectives(study: optuna.Study) -> list[tuple[str, str]]:
    """``[(metric, "maximize"|"minimize"), ...]`` in the study's order."""
    names = list(study.user_attrs.get("objectives") or [])
    dirs = ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
    names += [f"objective {i}" for i in range(len(names), len(dirs))]
    return list(zip(names, dirs))


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def history_svg(study: optuna.Study, title: str = "") -> str:
    """One panel per objective: each trial's value by trial number, and the best feasible so far."""
    objs = objectives(study)
    trials = [(t, k) for t in study.get_trials(deepcopy=False) if (k := trial_kind(t)) is not None]
    fig, axes = new_figure(7.5, 0.9 + 2.3 * max(len(objs), 1), max(len(objs), 1), 1, sharex=True)
    axes = [row[0] for row in axes]
    if not trials or not objs:
        _empty(axes[0], "no finished trial yet")
        return to_svg(fig)
    last = max(t.number for t, _ in trials)
    for i, (ax, (metric, direction)) in enumerate(zip(axes, objs)):
        for kind in (FEASIBLE, INFEASIBLE):
            pts = [(t.number, t.values[i]) for t, k in trials if k == kind]
            if pts:
                color, marker = STYLE[kind]
                line, = ax.plot([x for x, _ in pts], [y for _, y in pts], marker, color=color, ls="none",
                                label=LABEL[kind], ms=4.5)
                line.set_gid(series_id("history", metric, kind))
        unmeasured = [t.number for t, k in trials if k == NOT_MEASURED]
        if unmeasured:
            color, marker = STYLE[NOT_MEASURED]
            on_axis = blended_transform_factory(ax.transData, ax.transAxes)
            line, = ax.plot(unmeasured, [0.03] * len(unmeasured), marker, color=color, ls="none", ms=4.5,
                            transform=on_axis, clip_on=False, label=LABEL[NOT_MEASURED])
            line.set_gid(series_id("history", metric, NOT_MEASURED))
        xs, ys, best = [], [], None
        for t, k in sorted(trials, key=lambda p: p[0].number):
            if k == FEASIBLE and (best is None or _better(t.values[i], best, direction)):
                best = t.values[i]
            if best is not None:
                xs.append(t.number)
                ys.append(best)
        if xs:
            xs.append(last)
            ys.append(ys[-1])
            line, = ax.step(xs, ys, where="post", color=FRONT_COLOR, lw=1.6, label="best feasible so far")
            line.set_gid(series_id("history", metric, "best"))
        ax.set_ylabel(f"{metric}\n({direction})")
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2)
    axes[-1].set_xlabel("trial number")
    axes[-1].set_xlim(-0.5, last + 0.5)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or f"Optimisation history of study {study.study_name}")
    return to_svg(fig)


def pareto_front(points: Sequence[tuple[Any, float, float]], directions: Sequence[str]) -> list[Any]:
    """The keys of the non-dominated ``(key, x, y)`` points, for the two ``directions``."""

    def at_least(a: float, b: float, d: str) -> bool:
        return a >= b if d == "maximize" else a <= b

    front = []
    for key, x, y in points:
        dominated = any(at_least(x2, x, directions[0]) and at_least(y2, y, directions[1]) and (x2, y2) != (x, y)
                        for _, x2, y2 in points)
        if not dominated:
            front.append(key)
    return front


def pareto_svg(study: optuna.Study, title: str = "") -> str:
    """The first two objectives against each other: the front of the feasible trials (in these two),
    joined and labelled with trial numbers; dominated feasible trials; SLO-violating ones."""
    objs = objectives(study)[:2]
    fig, axes = new_figure(6.0, 4.0)
    ax = axes[0][0]
    if len(objs) < 2:
        _empty(ax, "a Pareto front needs two objectives")
        return to_svg(fig)
    trials = [(t, k) for t in study.get_trials(deepcopy=False) if (k := trial_kind(t)) is not None]
    feasible = [(t.number, t.values[0], t.values[1]) for t, k in trials if k == FEASIBLE]
    front = set(pareto_front(feasible, [d for _, d in objs]))
    groups = {
        "dominated": ([p for p in feasible if p[0] not in front], "#9e9e9e", "o", "dominated (feasible)"),
        INFEASIBLE: ([(t.number, t.values[0], t.values[1]) for t, k in trials if k == INFEASIBLE],
                     STYLE[INFEASIBLE][0], "x", LABEL[INFEASIBLE]),
    }
    for name, (pts, color, marker, label) in groups.items():
        if pts:
            line, = ax.plot([p[1] for p in pts], [p[2] for p in pts], marker, color=color, ls="none", ms=4.5,
                            label=label)
            line.set_gid(series_id("pareto", name))
    on_front = sorted((p for p in feasible if p[0] in front), key=lambda p: p[1])
    if on_front:
        line, = ax.plot([p[1] for p in on_front], [p[2] for p in on_front], "o-", color=FRONT_COLOR, ms=6,
                        label="Pareto front")
        line.set_gid(series_id("pareto", "front"))
        for number, x, y in on_front:
            ax.annotate(f"#{number}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if not feasible and not groups[INFEASIBLE][0]:
        _empty(ax, "no measured trial yet")
        return to_svg(fig)
    hidden = sum(k == NOT_MEASURED for _, k in trials)
    if feasible:  # the view is the feasible region: far-off SLO breakers would squash it to a corner
        (x0, x1), (y0, y1) = _padded([p[1] for p in feasible]), _padded([p[2] for p in feasible])
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        hidden += sum(not (x0 <= p[1] <= x1 and y0 <= p[2] <= y1) for p in groups[INFEASIBLE][0])
    if hidden:
        ax.text(0.99, 0.01, f"{hidden} trial(s) not measured or outside this view", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color=STYLE[NOT_MEASURED][0])
    (mx, dx), (my, dy) = objs
    ax.set_xlabel(f"{mx} ({dx})")
    ax.set_ylabel(f"{my} ({dy})")
    ax.legend(loc="best")
    more = len(objectives(study)) - 2
    ax.set_title(title or f"Pareto front of study {study.study_name}"
                 + (f" (first two of {more + 2} objectives)" if more > 0 else ""))
    return to_svg(fig)


def _padded(values: Sequence[float], share: float = 0.15) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * share or abs(high) * share or 1.0
    return low - pad, high + pad


@dataclass
class Importances:
    """Per objective, ``{param: importance}`` (normalized, largest first), or a note saying why not.
    ``trials``: which trials they were computed over, in words ("feasible measured" or "measured")."""

    by_objective: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluator: str = EVALUATOR
    n_trials: int = 0
    trials: str = "feasible measured"
    target_quantile: float = 0.1
    note: str = ""

    def describe(self) -> str:
        return (f"{self.evaluator} over the {self.n_trials} {self.trials} trials "
                f"(importance of reaching their top {self.target_quantile:.0%})")


def param_importances(study: optuna.Study, min_trials: int = MIN_IMPORTANCE_TRIALS) -> Importances:
    """``optuna.importance.get_param_importances`` with PED-ANOVA (no scikit-learn needed), per
    objective, over the feasible measured trials: the configurations anyone may use. With fewer
    than ``min_trials`` of them, over every measured trial, SLO breakers included (their values are
    real measurements; the report says so); never over unmeasured trials, whose value is a
    placeholder. With fewer than ``min_trials`` measured trials, a note instead. The target
    quantile is raised from 10% so that at least two trials are in it."""
    objs = objectives(study)
    feasible = [t for t in study.get_trials(deepcopy=False) if trial_kind(t) == FEASIBLE]
    measured = [t for t in study.get_trials(deepcopy=False) if trial_kind(t) in (FEASIBLE, INFEASIBLE)]
    pool = feasible
    out = Importances(n_trials=len(feasible))
    if len(feasible) < min_trials <= len(measured):
        pool = measured
        out.n_trials, out.trials = len(measured), f"measured (SLO breakers included: {len(feasible)} feasible)"
    if len(pool) < min_trials:
        out.note = (f"parameter importances need at least {min_trials} measured trials; this study has "
                    f"{len(measured)} ({len(feasible)} feasible)")
        return out
    varied = {p for t in pool for p in t.params if len({repr(x.params.get(p)) for x in pool}) > 1}
    if not varied:
        out.note = f"no parameter varied across the {out.trials} trials"
        return out
    out.target_quantile = min(0.5, max(0.1, 2 / len(pool)))
    quiet = logging.getLogger("optuna.storages._in_memory")  # "A new study created in memory" on every call
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        quiet.setLevel(level)
    copy.add_trials(pool)
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=out.target_quantile)
    for i, (metric, direction) in enumerate(objs):
        sign = -1.0 if direction == "maximize" else 1.0  # PED-ANOVA ranks low target values as good

        def target(t: FrozenTrial, i: int = i, sign: float = sign) -> float:
            return sign * t.values[i]

        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "computes the importances of params to achieve low target"
                got = optuna.importance.get_param_importances(copy, evaluator=evaluator, target=target,
                                                              params=sorted(varied))
        except (RuntimeError, ValueError, ZeroDivisionError) as e:
            out.note = f"{EVALUATOR} could not rank the parameters: {e}"
            return out
        out.by_objective[metric] = {k: float(v) for k, v in got.items() if not math.isnan(v)}
    return out


def importances_svg(imp: Importances, title: str = "") -> str:
    """One panel per objective: a horizontal bar per parameter, the evaluator named in the axis."""
    n = max(len(imp.by_objective), 1)
    params = max((len(v) for v in imp.by_objective.values()), default=1)
    fig, axes = new_figure(7.5 if n > 1 else 6.0, 0.9 + 0.3 * params, 1, n)
    if not imp.by_objective:
        _empty(axes[0][0], imp.note or "no importances")
        return to_svg(fig)
    for ax, (metric, values) in zip(axes[0], imp.by_objective.items()):
        names = list(values)[::-1]  # largest on top
        bars = ax.barh(names, [values[p] for p in names], color="#1f77b4", height=0.6)
        for name, bar in zip(names, bars.patches):
            bar.set_gid(series_id("importance", metric, name))
        for name, v in zip(names, [values[p] for p in names]):
            ax.annotate(f"{v:.2f}", (v, name), textcoords="offset points", xytext=(3, 0), va="center", fontsize=7)
        ax.set_xlim(0, max(1.0, max(values.values(), default=0) * 1.15))
        ax.set_title(f"for {metric}")
        ax.set_xlabel(f"importance ({imp.evaluator}, normalized)")
        ax.grid(axis="y", visible=False)
    fig.suptitle(title or f"Parameter importances ({imp.evaluator})")
    fig.supxlabel(f"{imp.n_trials} {imp.trials} trials; importance of reaching their top "
                  f"{imp.target_quantile:.0%}", fontsize=7, color="#555555")
    return to_svg(fig)


def render_study_charts(study: optuna.Study, importances: Importances | None = None) -> dict[str, str]:
    """``{file name: SVG}``: the history, the Pareto front (two or more objectives) and the importances."""
    charts = {HISTORY: history_svg(study)}
    if len(study.directions) >= 2:
        charts[PARETO] = pareto_svg(study)
    charts[IMPORTANCES] = importances_svg(importances if importances is not None else param_importances(study))
    return charts


def study_chart_key(study_id: str, name: str) -> str:
    """``studies/<study id>/charts/<name>`` (beside the trials' ``campaigns/<study id>-t<N>/``)."""
    return f"studies/{keys.validate_id(study_id, 'study id')}/{CHARTS_DIR}/{keys.validate_id(name, 'chart name')}"


def store_study_charts(results: Any, study_id: str, charts: Mapping[str, str]) -> dict[str, str]:
    """Puts each chart at ``studies/<id>/charts/<name>`` as one unit through ``Results`` (verified,
    retried, spooled when storage is down, like a campaign's charts); returns name -> URI."""
    blobs = {study_chart_key(study_id, name): svg.encode() for name, svg in charts.items()}
    uris = {name: results.artifacts.uri(study_chart_key(study_id, name)) for name in charts}
    results._submit("charts", None, [], blobs, uris, label=f"charts of study {study_id}")
    return uris
