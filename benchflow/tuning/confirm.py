"""The confirmation step: re-measure the top k configurations with n repetitions each and name a
winner only when its interval separates it from the runner-up (``benchflow.stats.compare``)."""

from __future__ import annotations

from typing import Any

import optuna

from benchflow.stats.inference import compare
from benchflow.tuning.spec import TuningSpec
from benchflow.tuning.study import CampaignHook, StepsFactory, measure, per_repetition


def top_k(study: optuna.Study, spec: TuningSpec, k: int) -> list[optuna.trial.FrozenTrial]:
    feasible = [t for t in study.trials if t.user_attrs.get("measured") and not t.user_attrs.get("infeasible")]
    sign = -1 if spec.directions[0] == "maximize" else 1
    seen: set[str] = set()
    out = []
    for t in sorted(feasible, key=lambda t: sign * t.values[0]):
        key = repr(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:k]


def confirm_study(study: optuna.Study, spec: TuningSpec, steps_for: StepsFactory, *,
                  on_campaign: CampaignHook | None = None) -> dict[str, Any]:
    """Stores and returns ``{"verdict": "winner"|"tie"|"single", "text": ..., "trials": [...]}`` in the
    study's user attrs under ``confirm`` (first objective only)."""
    assert spec.confirm is not None
    metric, direction = next(iter(spec.objective.metrics.items()))
    runs = []
    for t in top_k(study, spec, spec.confirm.top_k):
        m = measure(spec, dict(t.user_attrs.get("flags", t.params)), f"{study.study_name}-c{t.number}", steps_for,
                    repetitions=spec.confirm.repetitions, on_campaign=on_campaign)
        runs.append({"trial": t.number, "params": t.params, "values": per_repetition(m, spec, metric)})
    if not runs:
        out = {"verdict": "none", "text": "no feasible configuration to confirm", "trials": []}
    elif len(runs) == 1:
        out = {"verdict": "single", "text": f"only trial {runs[0]['trial']} was feasible", "trials": runs}
    else:
        higher = direction == "maximize"
        mean = [sum(r["values"]) / len(r["values"]) if r["values"] else float("nan") for r in runs]
        order = sorted(range(len(runs)), key=lambda i: -mean[i] if higher else mean[i])
        win, second = runs[order[0]], runs[order[1]]
        c = compare(second["values"], win["values"], higher_is_better=higher, seed=spec.sampler.seed)
        ci = f"ratio {c.ratio:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]" if c.ci_low is not None else (c.note or "")
        if c.verdict == "better":
            text = f"winner: trial {win['trial']} ({metric} {ci} against trial {second['trial']})"
            verdict = "winner"
        else:
            tied = "; ".join(f"trial {r['trial']} ({params_text(r['params'])})" for r in runs)
            text = f"tie: {c.verdict} ({metric} {ci}); tied configurations: {tied}"
            verdict = "tie"
        out = {"verdict": verdict, "text": text, "trials": runs}
    study.set_user_attr("confirm", out)
    return out


def params_text(params: dict) -> str:
    """``max-num-seqs=46, gpu-memory-utilization=0.3``: floats to 6 significant figures (a stepped float
    search space gives 0.30000000000000004)."""
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
