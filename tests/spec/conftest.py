"""Helpers for spec tests: a minimal valid spec as a dict, and a writer for spec files."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).parent / "data" / "example.yaml"

MINIMAL = {
    "name": "minimal",
    "model": {"name": "m"},
    "backends": [
        {"name": "a", "kind": "vllm", "engine_args": {"max-num-seqs": 64}},
        {"name": "b", "kind": "vllm", "engine_args": {"max-num-seqs": 128}},
    ],
    "workload": {
        "dataset": "D(128,128)",
        "seed": 3,
        "load_points": [{"concurrency": 1}, {"concurrency": 8}, {"rate": 5, "arrival": "poisson"}],
        "max_requests": 50,
    },
    "repetitions": 2,
}


@pytest.fixture
def minimal() -> dict:
    """A fresh deep copy of a small valid spec (tests may mutate it)."""
    return copy.deepcopy(MINIMAL)


@pytest.fixture
def write_spec(tmp_path):
    """Writes a dict (as YAML) or a string to a spec file and returns its path."""

    def write(content, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
