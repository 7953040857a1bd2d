"""Presets: a tuning study's named (built-in) or inline starting point.

The preset's values of the searched flags are enqueued as the study's first trial
(:func:`benchflow.tuning.study.open_study`, once: a resumed study does not get it again).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "preset_problems"]

#: Built-in presets: starting values of engine flags by their native names, per kind (the simulator
#: takes vLLM's names). Only the flags in a study's search space are used; each value must lie in
#: its range (else give an inline preset).
_VLLM_PRESETS: dict[str, dict[str, Any]] = {
    "throughput": {"max-num-seqs": 256, "max-num-batched-tokens": 8192, "enable-chunked-prefill": True,
                   "gpu-memory-utilization": 0.9, "block-size": 16},
    "latency": {"max-num-seqs": 32, "max-num-batched-tokens": 2048, "enable-chunked-prefill": True,
                "gpu-memory-utilization": 0.9, "block-size": 16},
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "vllm": _VLLM_PRESETS,
    "sim": _VLLM_PRESETS,
    "sglang": {
        "throughput": {"max-running-requests": 256, "chunked-prefill-size": 8192, "mem-fraction-static": 0.9,
                       "schedule-conservativeness": 1.0},
        "latency": {"max-running-requests": 32, "chunked-prefill-size": 2048, "mem-fraction-static": 0.85,
                    "schedule-conservativeness": 1.0},
    },
    "openai": {},
}


def preset_problems(data: dict[str, Any], space: dict[str, Any], param_type: Any) -> list[str]:
    """A preset names a built-in of the backend's kind or maps searched flags to values in range.
    ``param_type`` is the tuning spec's search-space parameter type (passed in: this module is imported by
    the spec, so it may not import it back)."""
    preset = data.get("preset")
    if preset is None:
        return []
    backend = data.get("backend") if isinstance(data.get("backend"), dict) else {}
    kind = backend.get("kind")
    sampler = data.get("sampler") if isinstance(data.get("sampler"), dict) else {}
    problems = []
    if sampler.get("name") == "grid":
        problems.append("preset: the grid sampler measures every configuration in its own order; a preset adds "
                        "nothing (leave it out, or use another sampler)")
    if isinstance(preset, str):
        named = PRESETS.get(kind) if isinstance(kind, str) else None
        if named is None:
            return problems
        if preset not in named:
            have = ", ".join(named) or "none"
            return problems + [f"preset: {preset!r} is not a built-in preset of kind {kind} (have: {have}); or give a "
                               "mapping of flag values"]
        values, where, inline = named[preset], f"preset ({preset})", False
    elif isinstance(preset, dict):
        values, where, inline = preset, "preset", True
    else:
        return problems  # the schema reports it
    from pydantic import TypeAdapter, ValidationError

    params = {}
    for flag, p in space.items():
        try:
            params[flag] = TypeAdapter(param_type).validate_python(p)
        except ValidationError:
            continue
    used = [f for f in values if f in space]
    if inline:
        problems += [f"preset.{f}: not in search_space (a preset gives starting values of searched flags; fixed "
                     "flags go in backend.engine_args)" for f in values if f not in space]
    elif not used:
        problems.append(f"{where}: none of its flags ({', '.join(values)}) is in search_space")
    for f in used:
        why = params[f].refuses(values[f]) if f in params else None
        if why:
            hint = "" if inline else "; give an inline preset (a mapping of flag values) instead"
            problems.append(f"{where}.{f}: {why} of search_space.{f}{hint}")
    return problems
