"""Loading a campaign spec: every problem at once, one ``"path: message"`` line each.

``load_spec(path_or_dict)`` returns a :class:`CampaignSpec` or raises :class:`SpecError`.
``check(path_or_dict)`` returns the problem lines instead (empty when the spec is valid): the
entry point for code that must refuse a spec before anything runs (the CLI, ``trigger``, an API).

Order of checks: the file (:mod:`benchflow.spec.reader`: size, type, depth, aliases, syntax), the
raw data's structure (:func:`raw_problems`; a hostile structure is never handed to pydantic), the
schema (pydantic) and the cross-field rules (:mod:`benchflow.spec.checks`) on the typed model. When
the schema check fails, the cross-field rules still run on the parts that did validate.
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from benchflow.errors import SpecError
from benchflow.spec.checks import BROKEN, cross_field_problems
from benchflow.spec.errors import format_validation_error
from benchflow.spec.models import CampaignSpec, StrictModel, default_baseline
from benchflow.spec.reader import raw_problems, read_spec_file

__all__ = ["load_spec", "check", "salvage"]


@functools.cache
def _adapter(model: type[StrictModel], name: str) -> TypeAdapter:
    field = model.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


@functools.cache
def _item_adapter(model: type[StrictModel], name: str) -> TypeAdapter | None:
    """For a field typed ``list[X]`` (or ``list[X] | None``): an adapter of ``X``."""
    annotation = model.model_fields[name].annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is list:
            return TypeAdapter(typing.get_args(candidate)[0])
    return None


def _sub_model(model: type[StrictModel], name: str) -> type[StrictModel] | None:
    annotation = model.model_fields[name].annotation
    candidates = [annotation, *typing.get_args(annotation)]  # X or X | None
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, StrictModel)), None)


def salvage(model: type[StrictModel], data: Any, context: dict[str, Any]) -> Any:
    """``model`` built without validation from the fields of ``data`` that validate on their own;
    the others are :data:`~benchflow.spec.checks.BROKEN` (sub-models and the backend list are
    salvaged item by item). Only for running cross-field checks next to schema errors."""
    if not isinstance(data, dict):
        return BROKEN
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name not in data:
            if field.is_required():
                values[name] = BROKEN
            continue
        try:
            values[name] = _adapter(model, name).validate_python(data[name], context=context)
            continue
        except ValidationError:
            pass
        sub, items = _sub_model(model, name), _item_adapter(model, name)
        if sub is not None:
            values[name] = salvage(sub, data[name], context)
        elif items is not None and isinstance(data[name], list):
            values[name] = [_validated(items, item, context) for item in data[name]]
        else:
            values[name] = BROKEN
    return model.model_construct(_fields_set={k for k in values if k in data}, **values)


def _validated(adapter: TypeAdapter, data: Any, context: dict[str, Any]) -> Any:
    try:
        return adapter.validate_python(data, context=context)
    except ValidationError:
        return BROKEN


def _read(source: str | Path | dict[str, Any], base_dir: Path | None) -> tuple[Any, Path, str | None]:
    if isinstance(source, dict):
        return source, Path(base_dir) if base_dir else Path.cwd(), None
    if not isinstance(source, (str, Path)):
        raise SpecError([f"(top level): expected a spec file path or a mapping, got {type(source).__name__}"])
    path = Path(source)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return read_spec_file(path), path.absolute().parent, str(path)


def load_spec(source: str | Path | dict[str, Any], *, base_dir: str | Path | None = None) -> CampaignSpec:
    """Reads and validates a campaign spec from a YAML/JSON file (``str`` or ``Path``) or a dict.

    Raises :class:`SpecError` whose ``problems`` hold one ``"path: message"`` line per problem,
    all of them at once: file problems, schema errors and cross-field rules (duplicate names, sim
    backends without ``allow_simulated``, missing stop condition, JSONL files, sizes). Relative
    JSONL paths resolve against the spec file's folder (``base_dir``, else the current directory,
    for a dict); a relative spec path resolves against ``base_dir`` when it is given.
    """
    data, folder, label = _read(source, Path(base_dir) if base_dir is not None else None)
    if not isinstance(data, dict):
        raise SpecError([f"(top level): expected a mapping of keys, got {type(data).__name__}"], source=label)
    structural = raw_problems(data)
    if structural:
        raise SpecError(structural, source=label)
    context = {"base_dir": folder, "defer_cross_checks": True}
    try:
        spec = CampaignSpec.model_validate(data, context=context)
    except ValidationError as e:
        problems = format_validation_error(e)
        partial = salvage(CampaignSpec, default_baseline(data), context)
        problems += [p for p in cross_field_problems(partial, base_dir=folder) if p not in problems]
        raise SpecError(problems, source=label) from None
    except RecursionError as e:  # defensive: raw_problems bounds the depth, so this should not happen
        raise SpecError(["(top level): nested too deeply"], source=label) from e
    problems = cross_field_problems(spec, base_dir=folder)
    if problems:
        raise SpecError(problems, source=label)
    return spec


def check(source: str | Path | dict[str, Any] | CampaignSpec, *, base_dir: str | Path | None = None) -> list[str]:
    """The problem lines of a spec (a file path, a mapping or a built spec); ``[]`` when it is valid.

    For a file, lines about the file itself start with its path. Never raises for bad input.
    """
    try:
        if isinstance(source, CampaignSpec):
            return cross_field_problems(source, base_dir=Path(base_dir) if base_dir else None)
        load_spec(source, base_dir=base_dir)
    except SpecError as e:
        return list(e.problems)
    return []
