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


def winning_flags(study: optuna.Study) -> dict[str, Any]:
    best = feasible_best(study)
    if not best:
        from benchflow.errors import BenchflowError

        raise BenchflowError(f"study {study.study_name}: no feasible trial yet")
    spec = spec_of(study)
    return {**(spec.backend.engine_args or {}), **best[0].user_attrs.get("flags", best[0].params)}


def backend_block(study: optuna.Study) -> dict[str, Any]:
    spec = spec_of(study)
    backend = spec.backend.model_dump(mode="json", exclude_unset=True)
    backend["engine_args"] = winning_flags(study)
    backend["name"] = f"{backend.get('name', spec.backend.name)}-tuned"
    return backend


def serve_command(study: optuna.Study) -> str:
    """The winning configuration as one command line: ``vllm serve``, SGLang's launcher, or the
    simulator. A flag tuned to ``false`` is written ``--no-<flag>`` (vLLM's and SGLang's form), so a
    default-on flag such as ``enable-chunked-prefill`` is really turned off."""
    import shlex

    from benchflow.launch.commands import sim_engine_args

    spec = spec_of(study)
    flags = winning_flags(study)
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


def markdown(study: optuna.Study, charts: Mapping[str, str] | None = None) -> str:
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
        note = _note(t.user_attrs.get("infeasible") or t.user_attrs.get("failed_reason") or "")
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
    lines += [f"- trial {t.number}: {t.params} -> " + ", ".join(f"{k} {v:.4g}" for k, v in zip(metrics, t.values))
              for t in best]
    if confirm:
        lines += ["", "## Confirmation", "", confirm["text"]]
    if charts:
        lines += ["", charts_markdown(charts, names=list(charts)).rstrip()]
    imp = param_importances(study)
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
