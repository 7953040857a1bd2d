"""Turning pydantic's ``ValidationError`` into one clear ``"path: message"`` line per problem.

Paths are the spec's own (``backends[1].engine_args.max-num-seqs``): the discriminated-union tags
and validator names that pydantic puts into error locations (``function-after[...]``) are removed.
(Problems with the file itself are :mod:`benchflow.spec.reader`'s.)
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from benchflow.spec import backends, dynamic, models

__all__ = ["format_validation_error", "format_loc"]

#: Union tags pydantic puts into ``loc`` after a list index of these fields, and after "dataset".
_TAGGED_LISTS = {"backends": {"vllm", "sglang", "sim", "openai"}, "load_points": {"concurrency", "rate", "sweep",
                                                                                   "slo_capacity", "trace"}}
_DATASET_TAGS = {"notation", "file"}
_HINTS = {
    "arrival": "a rate needs arrival: poisson, gamma or constant",
    "kind": "one of vllm, sglang, sim, openai",
    "load_points": "a list of {concurrency: N}, {rate: R, arrival: ...}, {sweep: {points: N}} and/or "
                   "{slo_capacity: {min_rate: R, max_rate: R}} and/or {trace: {path: FILE}}",
}


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


#: Plain words for pydantic's type errors, whose own messages name Python classes.
_EXPECTED = {
    "model_type": "expected a mapping of keys", "model_attributes_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys", "path_type": "expected a file path", "list_type": "expected a list",
    "string_type": "expected a string", "int_type": "expected a whole number", "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number", "float_type": "expected a number", "float_parsing": "expected a number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
}


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for module in (models, backends, dynamic):
        for obj in vars(module).values():
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
    msg = _EXPECTED.get(kind, err["msg"])
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
