"""Rules of a campaign spec that involve several fields, checked on the typed model.

Every check takes a :class:`~benchflow.spec.models.CampaignSpec`. When the spec as a whole is
invalid, the loader still runs them on a partly built spec (:func:`benchflow.spec.loader.salvage`)
whose broken parts are :data:`BROKEN`, so cross-field problems are reported together with the
schema errors: each check skips what it cannot read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchflow.spec import limits as L
from benchflow.spec.backends import DOCKER_ONLY_FIELDS, LAUNCHED_ONLY_FIELDS, BackendSpec, quantization_problems

if TYPE_CHECKING:
    from benchflow.spec.models import CampaignSpec, WorkloadSpec

__all__ = ["BROKEN", "cross_field_problems"]


class _Broken:
    """Stands for a part of the spec that failed validation (its errors are already reported)."""

    def __repr__(self) -> str:
        return "BROKEN"

    def __bool__(self) -> bool:
        return False


BROKEN: Any = _Broken()


def _ok(value: Any) -> bool:
    return value is not None and value is not BROKEN


def _given(b: BackendSpec) -> set[str]:
    """Fields of ``b`` set in the spec to something other than the kind's default (a dumped spec
    lists every field with its default; those do not count as given)."""
    fields = type(b).model_fields
    return {name for name in b.model_fields_set
            if fields[name].is_required() or getattr(b, name) != fields[name].get_default(call_default_factory=True)}


def _field_use_problems(i: int, b: BackendSpec) -> list[str]:
    """Fields given for a launcher that does not use them."""
    given = _given(b)
    if b.kind == "openai":
        return [f"backends[{i}].{f}: not used by kind openai (the endpoint is already running)"
                for f in LAUNCHED_ONLY_FIELDS if f in given]
    problems = []
    if "url" in given:
        problems.append(f"backends[{i}].url: only kind openai takes a url; kind {b.kind} is started by benchflow")
    if b.launcher == "process":
        problems += [f"backends[{i}].{f}: only used with launcher docker (this backend's launcher is process)"
                     for f in DOCKER_ONLY_FIELDS if f in given]
    return problems


def _backend_problems(spec: CampaignSpec) -> list[str]:
    if not isinstance(spec.backends, list):
        return []
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for i, b in enumerate(spec.backends):
        if not isinstance(b, BackendSpec):
            continue
        if b.name in first_index:
            problems.append(f"backends[{i}].name: duplicate backend name {b.name!r} (also backends[{first_index[b.name]}])")
        else:
            first_index[b.name] = i
        if b.kind == "sim" and spec.allow_simulated is not True:
            problems.append(f"backends[{i}].kind: sim backends are refused unless the spec sets allow_simulated: true")
        if b.kind == "sim" and b.engine_args:
            from benchflow.sim.config import engine_arg_problems

            problems += engine_arg_problems(b.engine_args, prefix=f"backends[{i}].engine_args")
        problems += quantization_problems(b.kind, b.quantization, b.engine_args or {}, f"backends[{i}]")
        problems += _field_use_problems(i, b)
    return problems


def _prompt_tokens(dataset: Any) -> float | None:
    """Mean input tokens of a synthetic dataset, or None for a JSONL file or a broken dataset."""
    from benchflow.workload import DeterministicLengths, NormalLengths, UniformLengths, parse_notation

    if not isinstance(dataset, str):
        return None
    try:
        d = parse_notation(dataset)
    except ValueError:
        return None
    if isinstance(d, DeterministicLengths):
        return d.input_tokens
    if isinstance(d, NormalLengths):
        return d.input_mean + d.input_std
    return (d.input_min + d.input_max) / 2 if isinstance(d, UniformLengths) else None


def _workload_problems(w: WorkloadSpec, base_dir: Path | None, check_files: bool) -> list[str]:
    problems = []
    points = w.load_points if isinstance(w.load_points, list) else []
    traces = [(j, p) for j, p in enumerate(points) if getattr(p, "mode", None) == "trace"]
    if w.max_requests is None and w.max_duration_s is None and len(traces) < len(points):  # a trace ends by itself
        problems.append("workload: set max_requests and/or max_duration_s (a cell needs a stop condition)")
    if check_files:  # benchflow.spec.trace
        from benchflow.spec.trace import trace_problems

        for j, p in traces:
            problems += trace_problems(f"workload.load_points[{j}]", p, base_dir)
    mean = _prompt_tokens(w.dataset)
    count = (w.max_requests if isinstance(w.max_requests, int) else 1000) + (
        w.warmup_requests if isinstance(w.warmup_requests, int) else 0)
    if mean is not None and mean * count > L.MAX_PROMPT_TOKENS_PER_CELL:
        problems.append(
            f"workload: {count:,} requests x ~{mean:,.0f} input tokens is more than "
            f"{L.MAX_PROMPT_TOKENS_PER_CELL:,} prompt tokens per cell (a cell's prompts are built in memory)")
    source = w.dataset
    if check_files and _ok(source) and not isinstance(source, str) and _ok(getattr(source, "jsonl", None)):
        problems += _jsonl_problems(Path(source.jsonl), source.max_tokens, base_dir, getattr(source, "format", None))
    return problems


def _jsonl_problems(path: Path, max_tokens: Any, base_dir: Path | None, fmt: Any = None) -> list[str]:
    from benchflow.workload import jsonl_problems

    max_tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 256
    if not path.is_file():
        inside = base_dir is not None and path.is_relative_to(base_dir)
        where = " (a relative path is resolved against the spec's folder)" if inside else ""
        what = "not a regular file" if path.exists() else "file not found"
        return [f"workload.dataset.jsonl: {what}: {path}{where}"]
    if fmt in ("mooncake", "sharegpt"):  # benchflow.traces
        from benchflow.errors import SpecError
        from benchflow.traces import FileDataset

        try:
            FileDataset(path, fmt, max_tokens=max_tokens).prompts(0)
        except SpecError as e:
            return [f"workload.dataset.jsonl: {path.name}: {p}" for p in e.problems]
        return []
    return [f"workload.dataset.jsonl: {path.name}: {p}" for p in jsonl_problems(path, max_tokens)[1]]


def _compare_problems(spec: CampaignSpec) -> list[str]:
    compare = spec.compare
    if not _ok(compare):
        return []
    problems = []
    if isinstance(compare.baseline, str) and isinstance(spec.backends, list):
        names = [b.name for b in spec.backends if isinstance(b, BackendSpec)]
        if compare.baseline not in names and len(names) == len(spec.backends):
            problems.append(f"compare.baseline: no backend named {compare.baseline!r} (backends: {', '.join(names)})")
    if isinstance(compare.metrics, list) and not spec.slo:
        problems += [f"compare.metrics[{j}]: {key} needs an slo section"
                     for j, key in enumerate(compare.metrics) if key in ("goodput", "slo_attainment")]
    return problems


def _regression_problems(spec: CampaignSpec) -> list[str]:
    section = spec.regression
    if not _ok(section):
        return []
    problems = []
    metrics = section.metrics
    if isinstance(metrics, list) and not spec.slo:
        problems += [f"regression.metrics[{j}]: {key} needs an slo section"
                     for j, key in enumerate(metrics) if key in ("goodput", "slo_attainment")]
    checked = metrics if isinstance(metrics, list) else spec.compare.metrics if _ok(spec.compare) else None
    if isinstance(checked, list) and isinstance(section.tolerances, dict):
        shown = ", ".join(map(str, checked))
        problems += [f"regression.tolerances.{key}: {key} is not among the checked metrics ({shown})"
                     for key in section.tolerances if key not in checked]
    return problems


def _size_problems(spec: CampaignSpec) -> list[str]:
    w = spec.workload
    if not (isinstance(spec.backends, list) and _ok(w) and isinstance(w.load_points, list)
            and isinstance(spec.repetitions, int)):
        return []
    per_backend = sum(p.planned_cells(spec.repetitions) if getattr(p, "dynamic", False) else spec.repetitions
                      for p in w.load_points if _ok(p))
    cells = len(spec.backends) * per_backend
    if cells <= L.MAX_CELLS:
        return []
    dynamic = " (a sweep counts points + 2 cells per repetition, an slo_capacity its max_probes)" if any(
        getattr(p, "dynamic", False) for p in w.load_points) else ""
    return [f"repetitions: {len(spec.backends)} backends x {len(w.load_points)} load points x "
            f"{spec.repetitions} repetitions = {cells:,} cells{dynamic}, more than {L.MAX_CELLS:,} "
            "(cells are expanded, stored and run one by one; split the campaign)"]


def _dynamic_problems(spec: CampaignSpec) -> list[str]:
    """Combinations a sweep or an SLO-capacity search does not support."""
    w = spec.workload
    if not (_ok(w) and isinstance(w.load_points, list)):
        return []
    problems: list[str] = []
    kinds = {getattr(p, "mode", None) for p in w.load_points}
    for j, p in enumerate(w.load_points):
        if getattr(p, "mode", None) == "slo_capacity" and p.slo_capacity.slo is None and not spec.slo:
            problems.append(f"workload.load_points[{j}].slo_capacity.slo: an SLO capacity needs an slo "
                            "(give one here, or an slo section for the campaign)")
    if not isinstance(spec.backends, list) or not kinds & {"sweep", "slo_capacity"}:
        return problems
    for i, b in enumerate(spec.backends):
        restart = getattr(b, "restart", "never")
        if restart == "per_cell" or (restart == "per_repetition" and "slo_capacity" in kinds):
            what = "sweep" if restart == "per_cell" and "sweep" in kinds else "slo_capacity"
            problems.append(f"backends[{i}].restart: {restart} is not supported with a {what} load point (its "
                            "cells are derived while the backend runs; use restart: never)")
    return problems


def cross_field_problems(spec: CampaignSpec, *, base_dir: Path | None = None, check_files: bool = True) -> list[str]:
    """One ``"path: message"`` line per broken multi-field rule of ``spec``.

    ``base_dir`` is only named in messages about relative JSONL paths (they are resolved when the
    spec is validated); ``check_files=False`` skips reading the JSONL file.
    """
    problems = _backend_problems(spec)
    if _ok(spec.workload):
        problems += _workload_problems(spec.workload, base_dir, check_files)
    return [*problems, *_compare_problems(spec), *_regression_problems(spec), *_size_problems(spec),
            *_dynamic_problems(spec)]
