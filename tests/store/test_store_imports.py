"""The store package has no import cycles (issue 12: artifacts.py <-> s3.py was one)."""

from __future__ import annotations

import ast
from pathlib import Path

import benchflow.store

PACKAGE = Path(benchflow.store.__file__).parent


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        name = f"benchflow.store.{path.stem}"
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("benchflow.store"):
                if node.module == "benchflow.store":
                    deps.update(f"benchflow.store.{a.name}" for a in node.names)
                else:
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("benchflow.store."))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep in graph and dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_store_modules_import_no_cycle():
    graph = _graph()
    assert "benchflow.store.artifact_factory" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
