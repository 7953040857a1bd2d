"""Rules of a tuning spec beyond the campaign's: the ``slo_capacity`` objective, and searching the
backend's engine-neutral ``quantization`` field."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

__all__ = ["CAPACITY_OBJECTIVE", "QUANT_PREFIX", "capacity_objective_problems", "quantization_space_problems"]

#: Search-space keys ``quantization.weights`` / ``quantization.kv_cache`` search the backend's
#: engine-neutral ``quantization`` field (categorical), rendered per engine like the fixed field.
QUANT_PREFIX = "quantization."

#: The objective measured by an ``slo_capacity`` load point: the SLO capacity in requests/s.
CAPACITY_OBJECTIVE = "slo_capacity"
#: Raw engine flags that set what ``quantization`` sets (``-q`` is vLLM's short form).
_RAW = ("quantization", "q", "kv-cache-dtype")


def capacity_objective_problems(lp: Any, metrics: dict[str, Any]) -> list[str]:
    """``slo_capacity`` is the objective of an ``slo_capacity`` load point, and only it."""
    mode = getattr(lp, "mode", None)
    if CAPACITY_OBJECTIVE in metrics and mode != "slo_capacity":
        return [f"objective.metrics.{CAPACITY_OBJECTIVE}: needs an slo_capacity load point; objective.load_point "
                f"{lp.label!r} is not one (its mode is {mode}; add one: {{slo_capacity: {{min_rate, max_rate}}}})"]
    if mode == "slo_capacity":
        problems = [f"objective.metrics.{k}: load point {lp.label!r} is an slo_capacity search, whose objective is "
                    f"{CAPACITY_OBJECTIVE} (its probes are at rates of their own)" for k in metrics
                    if k != CAPACITY_OBJECTIVE]
        if metrics.get(CAPACITY_OBJECTIVE) == "minimize":
            problems.append(f"objective.metrics.{CAPACITY_OBJECTIVE}: an SLO capacity is maximized")
        return problems
    if mode == "sweep":
        return [f"objective.load_point: {lp.label!r} is a sweep (cells at rates of their own); use a concurrency, "
                "rate or slo_capacity load point"]
    return []


def quantization_space_problems(space: dict[str, Any], backend: dict[str, Any]) -> list[str]:
    """``quantization.weights`` / ``quantization.kv_cache`` in the search space: categorical, values
    the backend's kind takes, not also fixed in ``backend.quantization`` or as a raw engine flag."""
    from benchflow.spec.backends import Quantization, quantization_problems

    searched = [f for f in space if f.startswith(QUANT_PREFIX)]
    fixed_q = backend.get("quantization") if isinstance(backend.get("quantization"), dict) else {}
    if not searched and not fixed_q:
        return []
    kind = backend.get("kind")
    problems: list[str] = []
    for flag in searched:
        name, p = flag[len(QUANT_PREFIX):], space[flag]
        if name not in Quantization.model_fields:
            problems.append(f"search_space.{flag}: not a quantization field (use quantization.weights or "
                            "quantization.kv_cache)")
            continue
        if name in fixed_q:
            problems.append(f"search_space.{flag}: also fixed in backend.quantization.{name}; keep it in one place")
        if not isinstance(p, dict) or p.get("type") != "categorical" or not isinstance(p.get("choices"), list):
            problems.append(f"search_space.{flag}: must be categorical (choices of quantization.{name})")
            continue
        for v in p["choices"]:
            try:
                q = Quantization.model_validate({name: v})
            except ValidationError as e:
                problems.append(f"search_space.{flag}: {v!r}: {e.errors()[0]['msg']}")
                continue
            if isinstance(kind, str):
                found = quantization_problems(kind, q, {}, "backend")
                problems += [f"search_space.{flag}: {line.split(': ', 1)[1]}" for line in found]
    raw = [f for f in space if f.lstrip("-").replace("_", "-") in _RAW]
    if searched:
        fixed = backend.get("engine_args") if isinstance(backend.get("engine_args"), dict) else {}
        raw_fixed = [f"backend.engine_args.{f}" for f in fixed if str(f).lstrip("-").replace("_", "-") in _RAW]
        problems += [f"search_space: {', '.join(searched)} and {r} set the same engine flags; keep one"
                     for r in raw + raw_fixed]
    elif fixed_q:
        problems += [f"search_space.{f}: also set by backend.quantization; keep it in one place" for f in raw]
    return problems
