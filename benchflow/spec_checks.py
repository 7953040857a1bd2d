"""Rules of a campaign spec that involve several fields.

They run on the raw mapping (what the file says), so that they are reported together with the
schema errors even when other parts of the file are broken: every function here is defensive
about types and silently skips what the schema check already reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchflow.spec_backends import (
    BACKEND_CLASSES, BACKEND_KINDS, DEFAULT_LAUNCHER, DOCKER_ONLY_FIELDS, LAUNCHED_ONLY_FIELDS,
)

__all__ = ["cross_field_problems", "default_baseline"]


def default_baseline(data: Any) -> Any:
    """A copy of ``data`` whose ``compare.baseline`` defaults to the first backend's name."""
    if not isinstance(data, Mapping):
        return data
    backends = data.get("backends")
    compare = data.get("compare", {})
    if not (isinstance(backends, list) and backends and isinstance(compare, Mapping)):
        return data
    first = backends[0]
    name = first.get("name") if isinstance(first, Mapping) else getattr(first, "name", None)
    if compare.get("baseline") is not None or not isinstance(name, str):
        return data
    return {**data, "compare": {**compare, "baseline": name}}


def _backend_problems(data: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    backends = data.get("backends")
    if not isinstance(backends, list):
        return problems
    first_index: dict[str, int] = {}
    for i, b in enumerate(backends):
        if not isinstance(b, Mapping):
            continue
        name = b.get("name")
        if isinstance(name, str):
            if name in first_index:
                first = first_index[name]
                problems.append(f"backends[{i}].name: duplicate backend name {name!r} (also backends[{first}])")
            else:
                first_index[name] = i
        kind = b.get("kind")
        if kind not in BACKEND_KINDS:
            continue
        if kind == "sim" and data.get("allow_simulated") is not True:
            problems.append(f"backends[{i}].kind: sim backends are refused unless the spec sets allow_simulated: true")
        if kind == "sim" and isinstance(b.get("engine_args"), Mapping):
            from benchflow.sim.config import engine_arg_problems

            problems += engine_arg_problems(b["engine_args"], prefix=f"backends[{i}].engine_args")
        problems += _field_use_problems(i, b, kind)
    return problems


def _given(b: Mapping[str, Any], kind: str) -> set[str]:
    """Keys of backend ``b`` whose value differs from the kind's default (a dumped spec lists every
    field with its default; those do not count as given)."""
    fields = BACKEND_CLASSES[kind].model_fields
    given = set()
    for key, value in b.items():
        field = fields.get(key)
        if field is None or field.is_required() or value != field.get_default(call_default_factory=True):
            given.add(key)
    return given


def _field_use_problems(i: int, b: Mapping[str, Any], kind: str) -> list[str]:
    """Fields given for a launcher that does not use them."""
    given = _given(b, kind)
    if kind == "openai":
        return [f"backends[{i}].{f}: not used by kind openai (the endpoint is already running)"
                for f in LAUNCHED_ONLY_FIELDS if f in given]
    problems = []
    if "url" in given:
        problems.append(f"backends[{i}].url: only kind openai takes a url; kind {kind} is started by benchflow")
    launcher = b.get("launcher", DEFAULT_LAUNCHER[kind])
    if launcher == "process":
        problems += [f"backends[{i}].{f}: only used with launcher docker (this backend's launcher is process)"
                     for f in DOCKER_ONLY_FIELDS if f in given]
    return problems


def _workload_problems(data: Mapping[str, Any], base_dir: Path | None, check_files: bool) -> list[str]:
    from benchflow.workload import jsonl_problems

    workload = data.get("workload")
    if not isinstance(workload, Mapping):
        return []
    problems = []
    if workload.get("max_requests") is None and workload.get("max_duration_s") is None:
        problems.append("workload: set max_requests and/or max_duration_s (a cell needs a stop condition)")
    dataset = workload.get("dataset")
    if check_files and isinstance(dataset, Mapping) and isinstance(dataset.get("jsonl"), (str, Path)):
        path = Path(dataset["jsonl"]).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        max_tokens = dataset.get("max_tokens", 256)
        max_tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 256
        if not path.is_file():
            problems.append(f"workload.dataset.jsonl: file not found: {path}")
        else:
            problems += [f"workload.dataset.jsonl: {path.name}: {p}" for p in jsonl_problems(path, max_tokens)[1]]
    return problems


def _compare_problems(data: Mapping[str, Any]) -> list[str]:
    compare = data.get("compare")
    if not isinstance(compare, Mapping):
        return []
    problems = []
    baseline = compare.get("baseline")
    backends = data.get("backends")
    if isinstance(baseline, str) and isinstance(backends, list):
        names = [b.get("name") for b in backends if isinstance(b, Mapping)]
        if baseline not in names:
            problems.append(f"compare.baseline: no backend named {baseline!r} (backends: {', '.join(map(str, names))})")
    metrics = compare.get("metrics")
    if isinstance(metrics, list) and not data.get("slo"):
        for j, key in enumerate(metrics):
            if key in ("goodput", "slo_attainment"):
                problems.append(f"compare.metrics[{j}]: {key} needs an slo section")
    return problems


def _regression_problems(data: Mapping[str, Any]) -> list[str]:
    section = data.get("regression")
    if not isinstance(section, Mapping):
        return []
    problems = []
    metrics = section.get("metrics")
    if isinstance(metrics, list) and not data.get("slo"):
        problems += [f"regression.metrics[{j}]: {key} needs an slo section"
                     for j, key in enumerate(metrics) if key in ("goodput", "slo_attainment")]
    compare = data.get("compare")
    checked = metrics if isinstance(metrics, list) else compare.get("metrics") if isinstance(compare, Mapping) else None
    tolerances = section.get("tolerances")
    if isinstance(checked, list) and isinstance(tolerances, Mapping):
        shown = ", ".join(map(str, checked))
        problems += [f"regression.tolerances.{key}: {key} is not among the checked metrics ({shown})"
                     for key in tolerances if key not in checked]
    return problems


def cross_field_problems(data: Any, *, base_dir: Path | None = None, check_files: bool = True) -> list[str]:
    """One ``"path: message"`` line per broken multi-field rule in the raw spec ``data``.

    ``base_dir`` resolves a relative JSONL path; ``check_files=False`` skips reading it.
    """
    if not isinstance(data, Mapping):
        return []
    data = default_baseline(data)
    return [*_backend_problems(data), *_workload_problems(data, base_dir, check_files), *_compare_problems(data),
            *_regression_problems(data)]
