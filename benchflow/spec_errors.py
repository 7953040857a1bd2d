"""Turning bad spec input into one clear ``"path: message"`` line per problem.

Two sources: the file itself (missing, unreadable, YAML/JSON syntax, duplicate keys) and
pydantic's ``ValidationError`` (paths like ``backends[1].engine_args.max-num-seqs``, with the
discriminated-union tags that pydantic inserts into error locations removed).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from benchflow.errors import SpecError

__all__ = ["format_validation_error", "read_spec_file", "format_loc"]

#: Union tags pydantic puts into ``loc`` after a list index of these fields, and after "dataset".
_TAGGED_LISTS = {"backends": {"vllm", "sglang", "sim", "openai"}, "load_points": {"concurrency", "rate"}}
_DATASET_TAGS = {"notation", "file"}
_HINTS = {
    "arrival": "a rate needs arrival: poisson, gamma or constant",
    "kind": "one of vllm, sglang, sim, openai",
    "load_points": "a list of {concurrency: N} and/or {rate: R, arrival: ...}",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_spec_file(path: Path) -> Any:
    """Parses a YAML or JSON spec file; raises :class:`SpecError` with one line (and the line number
    for syntax errors) when the file is missing, unreadable or malformed."""
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise SpecError([f"{path}: file not found"], source=label) from e
    except IsADirectoryError as e:
        raise SpecError([f"{path}: is a directory, not a spec file"], source=label) from e
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([f"{path}: cannot read: {getattr(e, 'strerror', None) or e}"], source=label) from e
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError([f"{path}: line {e.lineno}, column {e.colno}: {e.msg}"], source=label) from e
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x) or str(e)
        raise SpecError([f"{path}: {where}YAML syntax error: {what}"], source=label) from e
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: YAML error: {e}"], source=label) from e


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('backends', 1, 'vllm', 'engine_args', 'max-num-seqs')`` -> ``backends[1].engine_args.max-num-seqs``."""
    out = ""
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        before = loc[i - 2] if i > 1 else None
        if isinstance(prev, int) and isinstance(before, str) and part in _TAGGED_LISTS.get(before, ()):
            continue  # a discriminated-union tag, not a key of the file
        if prev == "dataset" and part in _DATASET_TAGS:
            continue
        if isinstance(part, str) and "[" in part:  # pydantic's own tags such as "function-after[...]"
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _known_keys() -> set[str]:
    from benchflow import spec as spec_module

    keys: set[str] = set()
    for obj in vars(spec_module).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel):
            keys.update(obj.model_fields)
    return keys


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: dict[str, Any]) -> str:
    kind, ctx, loc = err["type"], err.get("ctx") or {}, err["loc"]
    last = loc[-1] if loc else None
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(last), sorted(_known_keys()), n=1, cutoff=0.75)
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        hint = _HINTS.get(str(last))
        return "required key is missing" + (f" ({hint})" if hint else "")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op, bound = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
                     "less_than_equal": ("<=", "le")}[kind]
        return f"must be {op} {ctx.get(bound)} (got {_short(err.get('input'))})"
    if kind == "too_short" and ctx.get("min_length") == 1:
        hint = _HINTS.get(str(last))
        return "must not be empty" + (f" ({hint})" if hint else "")
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"required key is missing ({_HINTS['kind']})"
    msg = err["msg"]
    if kind in ("value_error", "assertion_error"):
        return msg.split(", ", 1)[1] if ", " in msg else msg
    shows_input = ("_type", "_parsing", "literal_error", "string_pattern_mismatch")
    if kind.endswith(shows_input) or kind in ("load_point", "dataset"):
        return f"{msg} (got {_short(err.get('input'))})"
    return msg


def format_validation_error(error: ValidationError) -> list[str]:
    """One ``"path: message"`` line per pydantic error, duplicates removed, in document order."""
    lines: list[str] = []
    for err in error.errors(include_url=False):
        path = format_loc(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path += "." + str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'")
        line = f"{path}: {_message(err)}"
        if line not in lines:
            lines.append(line)
    return lines
