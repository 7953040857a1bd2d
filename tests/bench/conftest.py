"""The benchmark scripts live in bench/ (not a package): load them by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def overhead() -> ModuleType:
    return load_bench("orchestration_overhead")


@pytest.fixture()
def run_all() -> ModuleType:
    return load_bench("run_all")
