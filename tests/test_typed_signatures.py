"""``Any`` does not creep back into the engine's signatures or the flows' and tasks' parameters
(issue 12, typed results): a backend is a ``BackendSpec``, a cell a ``Cell``, a launcher a
``Launcher``, a summary a ``CellSummary``. ``Any`` stays allowed only as the value type of a
JSON-like ``dict[str, Any]`` / ``Mapping[str, Any]`` (a health report, a flow's summary).

Annotations are read as the strings the modules hold (``from __future__ import annotations``),
parsed with :mod:`ast`; nothing is evaluated, so names imported under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from benchflow import engine

ROOT = Path(__file__).resolve().parents[1]
ENGINE_MODULES = ("benchflow.engine.backend", "benchflow.engine.campaign", "benchflow.engine.cells",
                  "benchflow.engine.steps", "benchflow.engine.dynamic")
#: flows/tune.py belongs to the tuning work; it is checked once it is typed.
SKIPPED = {"__init__.py", "tune.py"}


def _loose_any(annotation: object) -> bool:
    """True when ``annotation`` uses ``Any`` other than as the value type of a dict/Mapping."""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    tree = ast.parse(text, mode="eval")
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == "Any"
                or isinstance(node, ast.Attribute) and node.attr == "Any"):
            continue
        pair, sub = parent.get(node), parent.get(parent.get(node))
        if (isinstance(pair, ast.Tuple) and isinstance(sub, ast.Subscript) and pair.elts[-1] is node
                and isinstance(sub.value, ast.Name) and sub.value.id in ("dict", "Mapping")):
            continue
        return True
    return False


def _annotations(fn: object) -> dict[str, object]:
    return dict(getattr(inspect.unwrap(fn), "__annotations__", {}))


def _offenders(where: str, annotations: dict[str, object]) -> list[str]:
    return [f"{where}: {name}: {ann}" for name, ann in annotations.items() if _loose_any(ann)]


def test_the_rule_tells_a_loose_any_from_a_json_dict():
    assert _loose_any("Any") and _loose_any("list[Any]") and _loose_any("Callable[[Any], None]")
    assert _loose_any("dict[Any, str]") and _loose_any("Any | None") and _loose_any("typing.Any")
    assert not _loose_any("dict[str, Any]") and not _loose_any("Mapping[str, Any] | None")
    assert not _loose_any("Callable[[BackendSpec], dict[str, Any]]") and not _loose_any("CellSummary")


def test_engine_functions_and_steps_have_no_loose_any():
    found: list[str] = []
    for name in ENGINE_MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj):
                found += _offenders(f"{name}.{attr}", _annotations(obj))
            elif inspect.isclass(obj):
                found += _offenders(f"{name}.{attr}", dict(vars(obj).get("__annotations__", {})))
                for meth, fn in vars(obj).items():
                    if inspect.isfunction(fn) and (meth == "__call__" or not meth.startswith("_")):
                        found += _offenders(f"{name}.{attr}.{meth}", _annotations(fn))
    assert not found, "Any in the engine's signatures:\n" + "\n".join(found)


def test_the_engine_steps_name_their_types():
    hints = {f.name: str(f.type) for f in dataclasses.fields(engine.BackendSteps)}
    assert "BackendSpec" in hints["deploy"] and "Launcher" in hints["deploy"]
    assert "Cell" in hints["run_cell"] and "CellOutcome" in hints["run_cell"]
    assert "CellRow" in hints["persist_cell"] and "CellSummary" in hints["persist_cell"]
    stored = inspect.signature(engine.steps.StoredRows.__call__).return_annotation
    assert "CellRow" in stored and "CellSummary" in stored


def _prefect_callables():
    from prefect import Flow, Task

    for folder in ("flows", "tasks"):
        for path in sorted((ROOT / folder).glob("*.py")):
            if path.name in SKIPPED:
                continue
            module = importlib.import_module(f"{folder}.{path.stem}")
            for attr, obj in vars(module).items():
                if isinstance(obj, (Task, Flow)) and obj.fn.__module__ == module.__name__:
                    yield f"{module.__name__}.{attr}", obj.fn


def test_flow_and_task_parameters_have_no_loose_any():
    pytest.importorskip("prefect")
    callables = list(_prefect_callables())
    assert len(callables) >= 10, "the flows and tasks were found"
    found = [o for where, fn in callables for o in _offenders(where, _annotations(fn))]
    assert not found, "Any in flow or task signatures:\n" + "\n".join(found)
