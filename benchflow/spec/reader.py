"""Reading a spec file without trusting it: bounded in size, depth, alias expansion and file type.

:func:`read_spec_file` returns the parsed YAML/JSON data or raises :class:`SpecError` with one
line. It reads regular files only (``/dev/zero`` or a FIFO is refused without blocking), at most
:data:`MAX_SPEC_BYTES`, refuses nesting deeper than :data:`MAX_DEPTH` and YAML whose aliases
expand to more than :data:`MAX_VALUES` values (a "billion laughs" bomb) before building anything.
:func:`raw_problems` checks data that did not come from a file (a dict) against the same bounds,
plus finite numbers, 64-bit integers, string keys and no NUL bytes.
"""

from __future__ import annotations

import json
import math
import os
import stat
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from benchflow.errors import SpecError

__all__ = ["MAX_SPEC_BYTES", "MAX_DEPTH", "MAX_VALUES", "read_spec_file", "raw_problems"]

#: Largest spec file read (a real spec is a few KiB).
MAX_SPEC_BYTES = 1 << 20
#: Deepest nesting of mappings and lists (a real spec nests 5 levels).
MAX_DEPTH = 64
#: Most values (scalars, mappings, lists) a spec may hold once YAML aliases are expanded.
MAX_VALUES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_Loader):  # type: ignore[misc, valid-type]
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)
    and keys that are lists or mappings."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _where(path: Path) -> str:
    return "" if path.is_absolute() else f" (relative to the current directory, {Path.cwd()})"


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    label = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError as e:
        raise SpecError([f"{path}: file not found{_where(path)}"], source=label) from e
    except (OSError, ValueError) as e:
        raise SpecError([f"{path}: cannot read: {getattr(e, 'strerror', None) or e}{_where(path)}"],
                        source=label) from e
    if stat.S_ISDIR(info.st_mode):
        raise SpecError([f"{path}: is a directory, not a spec file"], source=label)
    if not stat.S_ISREG(info.st_mode):
        raise SpecError([f"{path}: not a regular file (a device, FIFO or socket); give a spec file"], source=label)
    if info.st_size > max_bytes:
        raise SpecError([f"{path}: {info.st_size:,} bytes; a spec file may be at most {max_bytes:,} bytes"],
                        source=label)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the stat above
                raise SpecError([f"{path}: not a regular file"], source=label)
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise SpecError([f"{path}: cannot read: {e.strerror or e}"], source=label) from e
    if len(data) > max_bytes:
        raise SpecError([f"{path}: more than {max_bytes:,} bytes; a spec file may be at most that"], source=label)
    return data


def _check_yaml_events(text: str) -> str | None:
    """Depth and alias-expanded size of a YAML text from its parse events (nothing is built):
    a problem line, or None."""
    anchors: dict[str, int] = {}
    stack: list[list[Any]] = []  # [values so far, anchor] per open collection
    total = 0

    def add(n: int) -> None:
        nonlocal total
        if stack:
            stack[-1][0] += n
        else:
            total += n

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([0, event.anchor])
            if len(stack) > MAX_DEPTH:
                line = event.start_mark.line + 1
                return f"line {line}: nested more than {MAX_DEPTH} levels deep"
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, anchor = stack.pop()
            size += 1
            if anchor is not None:
                anchors[anchor] = size
            add(size)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = 1
            add(1)
        elif isinstance(event, yaml.AliasEvent):
            add(anchors.get(event.anchor, 1))
        else:
            continue
        if total > MAX_VALUES or any(frame[0] > MAX_VALUES for frame in stack[-1:]):
            line = event.start_mark.line + 1
            return (f"line {line}: the spec holds more than {MAX_VALUES:,} values "
                    "(each use of a YAML alias counts its whole value)")
    return None


def _parse_yaml(path: Path, text: str) -> Any:
    label = str(path)
    try:
        problem = _check_yaml_events(text)
        if problem:
            raise SpecError([f"{path}: {problem}"], source=label)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x) or str(e)
        raise SpecError([f"{path}: {where}YAML syntax error: {what}"], source=label) from e
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: YAML error: {e}"], source=label) from e
    except (ValueError, OverflowError, RecursionError) as e:  # e.g. an int of 5,000 digits, a bad date
        raise SpecError([f"{path}: cannot read a value: {str(e)[:200]}"], source=label) from e


def read_spec_file(path: Path, *, max_bytes: int = MAX_SPEC_BYTES) -> Any:
    """Parses a YAML or JSON spec file; raises :class:`SpecError` with one line (and the line number
    for syntax errors) when the file is missing, not a regular file, too large, too deep,
    unreadable or malformed."""
    path = Path(path)
    label = str(path)
    raw = _read_bytes(path, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([f"{path}: not UTF-8 text (byte {e.start})"], source=label) from e
    if path.suffix.lower() != ".json":
        return _parse_yaml(path, text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError([f"{path}: line {e.lineno}, column {e.colno}: {e.msg}"], source=label) from e
    except RecursionError as e:
        raise SpecError([f"{path}: nested more than {MAX_DEPTH} levels deep"], source=label) from e
    except ValueError as e:  # an integer of more than 4,300 digits
        raise SpecError([f"{path}: cannot read a value: {str(e)[:200]}"], source=label) from e


class _TooBig(Exception):
    pass


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return "must not contain a NUL byte (\\x00)" if "\x00" in value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return "integer out of range (it must fit in 64 bits)" if abs(value) >= 2**63 else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"numbers must be finite, got {value!r}"
    if isinstance(value, date):
        return "YAML read this as a date; quote it to make it a string"
    return f"not a plain value ({type(value).__name__})"


def raw_problems(data: Any) -> list[str]:
    """Structural problems of raw spec data, one ``"path: message"`` line each: nesting deeper than
    :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values (shared references counted each time
    they appear), references to itself, non-string keys, NUL bytes, non-finite numbers, integers
    beyond 64 bits and values that are not plain JSON-like data."""
    problems: list[str] = []
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()
    total = 0

    def walk(value: Any, path: str, depth: int) -> int:
        nonlocal total
        if isinstance(value, BaseModel):
            return 1
        if not isinstance(value, (dict, list)):
            problem = _scalar_problem(value)
            if problem:
                problems.append(f"{path or '(top level)'}: {problem}")
            return 1
        key = id(value)
        if key in sizes:
            total += sizes[key]
            if total > MAX_VALUES:
                raise _TooBig(path)
            return sizes[key]
        if key in open_ids:
            problems.append(f"{path or '(top level)'}: refers to itself (a recursive alias)")
            return 1
        if depth >= MAX_DEPTH:
            problems.append(f"{path or '(top level)'}: nested more than {MAX_DEPTH} levels deep")
            return 1
        open_ids.add(key)
        size = 1
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(value, dict) and not isinstance(k, str):
                problems.append(f"{path or '(top level)'}: keys must be strings, got {str(k)[:40]!r}")
                continue
            if isinstance(k, str) and "\x00" in k:
                problems.append(f"{path or '(top level)'}: a key must not contain a NUL byte (\\x00)")
                continue
            size += walk(v, _join(path, k), depth + 1)
            total += 1
            if total > MAX_VALUES:
                raise _TooBig(path)
        open_ids.discard(key)
        sizes[key] = size
        return size

    try:
        walk(data, "", 0)
    except _TooBig as e:
        return [f"{e.args[0] or '(top level)'}: the spec holds more than {MAX_VALUES:,} values "
                "(shared references counted each time)"]
    return problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
