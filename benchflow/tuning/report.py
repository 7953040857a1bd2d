"""What a study found: best configuration or Pareto front, importances, and the winning flags as a
campaign ``backends:`` block, a ``vllm serve`` command line and JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import optuna

from benchflow.charts import tuning as tuning_charts
from benchflow.charts.embed import charts_markdown
from benchflow.errors import BenchflowError
from benchflow.spec.backends import render_engine_args
from benchflow.tuning.spec import TuningSpec
from benchflow.tuning.study import feasible_best

log = logging.getLogger(__name__)

def load(storage: Any, study_id: str | None) -> optuna.Study:
    if study_id is None:
        names = optuna.get_all_study_names(storage)
        if not names:
            from benchflow.errors import BenchflowError

            raise BenchflowError("no tuning study in this database; run `benchflow tune SPEC` first")
        study_id = names[-1]
    return optuna.load_study(study_name=study_id, storage=storage)


def spec_of(study: optuna.Study) -> TuningSpec:
    return TuningSpec.model_validate(study.user_attrs["spec"])


def chosen_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The configuration to use: the confirmation's winner when it named one (its re-measured mean
    may rank another of the top k first), else the search's best feasible trial (the first of the
    Pareto front for several objectives); None when no trial is feasible."""
    best = feasible_best(study)
    if not best:
        return None
    confirm = study.user_attrs.get("confirm") or {}
    if confirm.get("verdict") == "winner" and confirm.get("trials"):
        means = {r["trial"]: sum(r["values"]) / len(r["values"]) for r in confirm["trials"] if r.get("values")}
        if means:
            higher = spec_of(study).directions[0] == "maximize"
            number = (max if higher else min)(means, key=means.__getitem__)
            return study.trials[number]
    return best[0]


def winning_flags(study: optuna.Study) -> dict[str, Any]:
    chosen = chosen_trial(study)
    if chosen is None:
        raise BenchflowError(f"study {study.study_name}: no feasible trial yet")
    spec = spec_of(study)
    return {**(spec.backend.engine_args or {}), **chosen.user_attrs.get("flags", chosen.params)}


def backend_block(study: optuna.Study) -> dict[str, Any]:
    spec = spec_of(study)
    chosen = chosen_trial(study)
    if chosen is None:
        raise BenchflowError(f"study {study.study_name}: no feasible trial yet")
    backend = spec.trial_backend(chosen.user_attrs.get("flags", chosen.params))
    backend["name"] = f"{backend.get('name', spec.backend.name)}-tuned"
    return backend


def serve_command(study: optuna.Study) -> str:
    """The winning configuration as one command line: ``vllm serve``, SGLang's launcher, or the
    simulator. A flag tuned to ``false`` is written ``--no-<flag>`` (vLLM's and SGLang's form), so a
    default-on flag such as ``enable-chunked-prefill`` is really turned off."""
    import shlex

    from benchflow.launch.commands import sim_engine_args

    from benchflow.spec import BACKEND_CLASSES

    spec = spec_of(study)
    block = backend_block(study)  # the engine args with the quantization field rendered to native flags
    flags = BACKEND_CLASSES[spec.backend.kind].model_validate(block).effective_engine_args()
    if spec.backend.kind == "sim":
        return shlex.join(["benchflow", "sim", "--model", spec.model.name, *sim_engine_args(flags)])
    argv = render_engine_args({k: v for k, v in flags.items() if v is not False})
    argv += [f"--no-{k}" for k, v in flags.items() if v is False]
    engine = ["python", "-m", "sglang.launch_server", "--model-path"] if spec.backend.kind == "sglang" else \
        ["vllm", "serve"]
    return shlex.join([*engine, spec.model.name, *argv])


def importances(study: optuna.Study) -> dict[str, float]:
    """The first objective's parameter importances (see :func:`param_importances`); {} when too few."""
    return next(iter(tuning_charts.param_importances(study).by_objective.values()), {})


def param_importances(study: optuna.Study) -> tuning_charts.Importances:
    """Per objective, PED-ANOVA over the feasible measured trials, or a note saying why not."""
    return tuning_charts.param_importances(study)


def study_charts(study: optuna.Study, results: Any = None,
                 imp: tuning_charts.Importances | None = None) -> dict[str, str]:
    """``{file name: SVG}`` of the study (history, Pareto front, importances); with ``results``
    also stored at ``studies/<id>/charts/<name>`` in its artifact store. A chart that cannot be
    drawn or stored is logged, never fatal: the report goes out without it."""
    try:
        charts = tuning_charts.render_study_charts(study, imp)
    except Exception as e:  # noqa: BLE001 - a picture must not cost the study its report
        log.warning("charts of study %s not drawn: %s", study.study_name, e)
        return {}
    if results is not None:
        try:
            tuning_charts.store_study_charts(results, study.study_name, charts)
        except BenchflowError as e:
            log.warning("charts of study %s not stored: %s", study.study_name, e)
    return charts


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _note(reason: str) -> str:
    """The reason's first line; for a failed start, also the backend log's last line (the cause)."""
    lines = [x.strip() for x in reason.splitlines() if x.strip()]
    if not lines:
        return ""
    note = lines[0][:160]
    causes = [x for x in lines[1:] if "error" in x.lower() and not x.startswith("---")]
    if "never became ready" in lines[0] and causes:
        note += " — " + causes[-1][:200]
    return note.replace("|", "/")


def markdown(study: optuna.Study, charts: Mapping[str, str] | None = None,
             imp: tuning_charts.Importances | None = None) -> str:
    """The study's report; ``charts`` (see :func:`study_charts`) are embedded as ``data:`` images,
    which Prefect's markdown artifacts render (left out on the terminal)."""
    spec = spec_of(study)
    metrics = list(spec.objective.metrics)
    lines = [f"# Tuning study {study.study_name}", "",
             f"{spec.name}: {len(study.trials)} trials, sampler {spec.sampler_name}, objective "
             + ", ".join(f"{k} ({d})" for k, d in spec.objective.metrics.items())
             + f" at {spec.objective.load_point}", "",
             "| trial | state | " + " | ".join(spec.search_space) + " | " + " | ".join(metrics) + " | note |",
             "|" + "---|" * (3 + len(spec.search_space) + len(metrics))]
    for t in study.trials:
        vals = ([f"{v:.4g}" for v in t.values] if t.values and t.user_attrs.get("measured")
                else ["-"] * len(metrics))
        note = _note(t.user_attrs.get("infeasible") or t.user_attrs.get("failed_reason")
                     or t.user_attrs.get("capacity_note") or "")
        state = "infeasible" if t.user_attrs.get("infeasible") else t.state.name.lower()
        lines.append(f"| {t.number} | {state} | " + " | ".join(_fmt(t.params.get(p, "-")) for p in spec.search_space)
                     + " | " + " | ".join(vals) + f" | {note} |")
    best = feasible_best(study)
    lines.append("")
    if not best:
        lines.append("No feasible configuration yet.")
        if charts:
            lines += ["", charts_markdown(charts, names=list(charts)).rstrip()]
        return "\n".join(lines) + "\n"
    title = "Best configuration" if len(metrics) == 1 else "Pareto front"
    confirm = study.user_attrs.get("confirm")
    lines += [f"## {title}", ""]
    if confirm and confirm.get("verdict") == "tie":
        lines += ["Best single measurement of the search; the confirmation below finds no separable winner.", ""]
    lines += [f"- trial {t.number}: {_flags_text(t.params)} -> " + ", ".join(f"{k} {v:.4g}" for k, v in zip(metrics, t.values))
              for t in best]
    if confirm:
        lines += ["", "## Confirmation", "", confirm["text"]]
    if charts:
        lines += ["", charts_markdown(charts, names=list(charts)).rstrip()]
    imp = imp if imp is not None else param_importances(study)
    lines += ["", f"## Parameter importances ({imp.evaluator})", ""]
    if not imp.by_objective:
        lines.append(imp.note)
    for metric, values in imp.by_objective.items():
        if len(imp.by_objective) > 1:
            lines.append(f"- {metric}:")
        indent = "  " if len(imp.by_objective) > 1 else ""
        lines += [f"{indent}- {k}: {v:.2f}" for k, v in values.items()]
    if imp.by_objective:
        lines += ["", f"({imp.describe()})"]
    lines += ["", "## Winning flags", "", "```", serve_command(study), "```", "", "```json",
              json.dumps(winning_flags(study), indent=2), "```"]
    return "\n".join(lines) + "\n"


# ---- the self-contained HTML report (benchflow tune report ID --html FILE) ------------------------

HTML_TEMPLATE = "tuning.html.j2"
CAPTIONS = {
    tuning_charts.HISTORY: "Each trial's objective value by trial number; the line is the best feasible value so far. "
                           "Crosses broke the SLO; triangles on the axis were never measured.",
    tuning_charts.PARETO: "The first two objectives of every measured trial: the Pareto front of the feasible ones "
                          "(labelled with trial numbers), dominated ones grey, SLO breakers as crosses.",
    tuning_charts.IMPORTANCES: "How much each flag decides whether a configuration reaches the top of the trials "
                               "named below the chart (optuna.importance, PED-ANOVA).",
}


def _num(v: Any) -> str:
    """4 significant figures, never in exponent form (17660.8 -> 17661, not 1.766e+04)."""
    if not isinstance(v, float):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _flags_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in params.items())


def _rows(rows: list[list[Any]], classes: list[str] | None = None, cell_classes: Any = None) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            text = "-" if value is None else _num(value)
            cls = cell_classes(j, text) if cell_classes else ""
            if not cls and j > 0 and isinstance(value, (int, float)) and not isinstance(value, bool):
                cls = "num"
            cells.append({"text": text, "cls": cls})
        out.append({"cells": cells, "cls": classes[i] if classes else ""})
    return out


def _answer(study: optuna.Study, spec: TuningSpec, best: list) -> dict[str, str]:
    metrics = list(spec.objective.metrics)
    confirm = study.user_attrs.get("confirm") or {}
    if not best:
        return {"cls": "none", "text": f"No feasible configuration yet: none of the {len(study.trials)} trials started "
                                       "and stayed inside the SLO."}
    if len(metrics) > 1:
        return {"cls": "", "text": f"Pareto front of {len(best)} configuration(s) (trials "
                                   f"{', '.join(str(t.number) for t in best)}), trading "
                                   + " against ".join(f"{m} ({d})" for m, d in spec.objective.metrics.items())
                                   + "."}
    chosen = chosen_trial(study)
    assert chosen is not None
    value = f"{metrics[0]} {_num(chosen.values[0])}"
    if confirm.get("verdict") == "tie":
        tied = "; ".join(f"trial {r['trial']} ({_flags_text(r['params'])})" for r in confirm.get("trials", []))
        return {"cls": "tie", "text": f"Tie: the confirmation separates no configuration from the runner-up. Tied: "
                                      f"{tied}."}
    if confirm.get("verdict") == "winner":
        return {"cls": "", "text": f"Winner: trial {chosen.number} ({_flags_text(chosen.params)}), {value}; "
                                   f"confirmed: {confirm['text']}."}
    return {"cls": "", "text": f"Best: trial {chosen.number} ({_flags_text(chosen.params)}), {value} (one "
                               "measurement, not confirmed by re-measurement)."}


def _setup(spec: TuningSpec) -> list[str]:
    fixed = " ".join(f"--{k} {v}" for k, v in (spec.backend.effective_engine_args()).items()) or "(none)"
    lines = [f"model {spec.model.name}; backend {spec.backend.name} ({spec.backend.kind}), fixed engine args {fixed}"]
    for name, p in spec.search_space.items():
        d = p.model_dump(exclude_defaults=True)
        d.pop("type", None)
        lines.append(f"search {name}: {p.type} " + ", ".join(f"{k} {v}" for k, v in d.items()))
    lines += [f"constraint: {c}" for c in spec.constraints]
    lines.append("objective: " + ", ".join(f"{m} ({d})" for m, d in spec.objective.metrics.items())
                 + f" at load point {spec.objective.load_point}")
    slo = ", ".join(f"{k} ≤ {v:g} ms" for k, v in spec.slo_limits_ms().items())
    lines.append(f"SLO: {slo}" if slo else "SLO: none")
    budget = " and ".join(x for x in (f"{spec.trials.count} trials" if spec.trials.count else "",
                                      f"{spec.trials.timeout_s:g} s" if spec.trials.timeout_s else "") if x)
    lines.append(f"sampler {spec.sampler_name} (seed {spec.sampler.seed}); budget {budget}; "
                 f"{spec.repetitions} repetition(s) per trial"
                 + (f"; confirmation: top {spec.confirm.top_k} re-measured {spec.confirm.repetitions} times"
                    if spec.confirm else ""))
    return lines


def html_context(study: optuna.Study, charts: Mapping[str, str], footer: str = "",
                 imp: tuning_charts.Importances | None = None) -> dict[str, Any]:
    from benchflow.charts.embed import inline_svg

    spec = spec_of(study)
    metrics = list(spec.objective.metrics)
    params = list(spec.search_space)
    best = feasible_best(study)
    best_numbers = {t.number for t in best}
    kinds = {t.number: tuning_charts.trial_kind(t) or "running" for t in study.trials}
    counts = {k: sum(v == k for v in kinds.values()) for k in (tuning_charts.FEASIBLE, tuning_charts.INFEASIBLE,
                                                               tuning_charts.NOT_MEASURED)}
    status = (f"{len(study.trials)} trials: {counts['feasible']} feasible, {counts['infeasible']} infeasible (SLO "
              f"violated), {counts['not-measured']} not measured.")
    trial_rows, trial_classes = [], []
    for t in study.trials:
        measured = kinds[t.number] in (tuning_charts.FEASIBLE, tuning_charts.INFEASIBLE)
        note = _note(t.user_attrs.get("infeasible") or t.user_attrs.get("failed_reason")
                     or t.user_attrs.get("capacity_note") or "")
        trial_rows.append([t.number, kinds[t.number], *[t.params.get(p) for p in params],
                           *(list(t.values) if measured else [None] * len(metrics)), note])
        trial_classes.append("best" if t.number in best_numbers else "")
    tables = [{"title": "Best configuration" if len(metrics) == 1 else "Pareto front", "slug": "best",
               "headers": ["trial", *params, *metrics],
               "rows": _rows([[t.number, *[t.params.get(p) for p in params], *t.values] for t in best]),
               "note": "the search's measurements (one per repetition, averaged)"}]
    confirm = study.user_attrs.get("confirm") or {}
    if confirm.get("trials"):
        tables.append({"title": f"Confirmation re-measurements ({metrics[0]})", "slug": "confirm",
                       "headers": ["trial", *params, "repetitions", f"mean {metrics[0]}", "values"],
                       "rows": _rows([[r["trial"], *[r["params"].get(p) for p in params], len(r["values"]),
                                       sum(r["values"]) / len(r["values"]) if r["values"] else None,
                                       " ".join(_num(v) for v in r["values"])] for r in confirm["trials"]]),
                       "note": ""})
    imp = imp if imp is not None else param_importances(study)
    names = list(next(iter(imp.by_objective.values()), {}))
    tables.append({"title": f"Parameter importances ({imp.evaluator})", "slug": "importances",
                   "headers": ["flag", *imp.by_objective],
                   "rows": _rows([[p, *[imp.by_objective[m].get(p) for m in imp.by_objective]] for p in names]),
                   "note": imp.describe() if imp.by_objective else imp.note})
    tables.append({"title": "Trials", "slug": "trials", "headers": ["trial", "state", *params, *metrics, "note"],
                   "rows": _rows(trial_rows, trial_classes, lambda j, text: text if j == 1 else ""),
                   "note": "state: feasible; infeasible (measured, SLO violated); not-measured (a broken flag "
                           "constraint, a failed start, a backend that died, an interrupted trial)"})
    flags = None
    if best:
        import yaml

        flags = {"command": serve_command(study),
                 "yaml": yaml.safe_dump({"backends": [backend_block(study)]}, sort_keys=False),
                 "json": json.dumps(winning_flags(study), indent=2)}
    return {"study": {"id": study.study_name, "name": spec.name}, "answer": _answer(study, spec, best),
            "status": status, "setup": _setup(spec),
            "charts": [{"slug": n.removesuffix(".svg"), "svg": inline_svg(svg), "caption": CAPTIONS.get(n, n)}
                       for n, svg in charts.items()],
            "tables": tables, "confirm": confirm.get("text", ""), "flags": flags, "footer": footer}


def render_html(study: optuna.Study, charts: Mapping[str, str] | None = None, footer: str = "") -> str:
    """One self-contained HTML document (charts inline as ``<svg>``, no network resource)."""
    from benchflow.charts.html import _environment

    imp = param_importances(study)
    charts = study_charts(study, imp=imp) if charts is None else charts
    return _environment().get_template(HTML_TEMPLATE).render(**html_context(study, charts, footer, imp))
