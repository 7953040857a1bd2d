"""Fuzzed campaign specs, shared by the suite's Hypothesis test and ``bench/fuzz_spec.py``.

:func:`make_input` draws one input from a ``random.Random``: a valid spec (the test minimal one,
the example, the demo) with a few hostile mutations (huge, negative and non-finite numbers, NUL
bytes, deep nesting, shared references, wrong types, deleted and unknown keys), given either as a
dict or as YAML/JSON text with text-level damage (aliases, tags, list keys, brackets).
:func:`run_input` feeds it through everything ``benchflow validate --json`` does and classifies
the outcome: ``valid``, ``refused`` (a clean SpecError) or ``traceback`` (anything else).
"""

from __future__ import annotations

import copy
import json
import random
import reprlib
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchflow.errors import SpecError
from benchflow.redact import redact_spec
from benchflow.spec import load_spec
from tests.spec.conftest import EXAMPLE, MINIMAL

ROOT = Path(__file__).resolve().parents[2]
_SEEDS = [MINIMAL, yaml.safe_load(EXAMPLE.read_text()),
          yaml.safe_load((ROOT / "deployments" / "campaigns" / "demo.yaml").read_text())]

_HOSTILE_SCALARS = [
    0, -1, 1, 2, 10**6, 10**7, 10**9, 10**12, 2**31, 2**63 - 1, 2**63, -(2**63), 10**400, 1e308, -1e308, 1e-308,
    float("inf"), float("-inf"), float("nan"), 0.5, -0.0, True, False, None, "", " ", "a\x00b", "\x00",
    "10m", "1e400s", "-5s", "500", "500ms", ".inf", "D(8", "D(128,128)", "D(99999999999,1)", "N(1e300,1)/(1,1)",
    "U(0,10000000000)/(1,2)", "x" * 300, "é\u2028\ud7ff", "${HOME}", "../../etc/passwd", "/dev/zero", "poisson",
    "gamma", "vllm", "sim", "openai", "http://user:pass@127.0.0.1:9", "all",
]


def _deep(rng: random.Random) -> Any:
    value: Any = rng.choice([1, "x", {}, []])
    for _ in range(rng.choice([10, 70, 300, 3000])):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _shared(rng: random.Random) -> Any:
    value: Any = {"x": 1}
    for _ in range(rng.randint(5, 40)):
        value = {f"k{i}": value for i in range(rng.randint(2, 5))}
    return value


def _hostile_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(_HOSTILE_SCALARS)
    if roll < 0.7:
        return _deep(rng)
    if roll < 0.75:
        return _shared(rng)
    if roll < 0.85:
        return [rng.choice(_HOSTILE_SCALARS) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["concurrency", "rate", "arrival", "jsonl", "name", "kind", "p99", "x"]):
            rng.choice(_HOSTILE_SCALARS) for _ in range(rng.randint(0, 3))}


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) >= 6:  # a spec nests 5 deep; past that are the fuzzer's own deep or shared values
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(spec: dict, rng: random.Random) -> dict:
    spec = copy.deepcopy(spec)
    for _ in range(rng.randint(1, 4)):
        path = rng.choice(_paths(spec)[1:])
        parent = spec
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = rng.random()
        if action < 0.7:
            parent[last] = _hostile_value(rng)
        elif action < 0.85 and isinstance(parent, dict):
            del parent[last]
        elif isinstance(parent, dict):
            parent[rng.choice(["extra", "max_request", "burstiness", "env", "gpus"])] = _hostile_value(rng)
        elif isinstance(parent, list):
            parent.append(_hostile_value(rng))
    return spec


_TEXT_DAMAGE = ["&a ", "*a", "[", "]", "{", "}", ": ", "- ", "? ", "!!python/object:os.system ", "!!binary ",
                "\t", "\n", "'", '"', "<<: *a\n", "%YAML 1.1\n", "---\n", "\x00", "\ufeff", ".inf", "1e400", "#"]


def _damage_text(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(_TEXT_DAMAGE) + text[at:]
    return text


@dataclass
class FuzzInput:
    """A dict, or file text with its suffix."""

    data: dict | None = None
    text: str | None = None
    suffix: str = ".yaml"

    def describe(self, limit: int = 300) -> str:
        shown = _REPR.repr(self.data) if self.data is not None else f"{self.suffix} file: {self.text!r}"
        return shown if len(shown) <= limit else shown[:limit] + f"... ({len(shown):,} chars)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 8, 12, 12, 80, 80


def _expanded_size(value: Any, cap: int = 100_000) -> int:
    """Values in ``value`` with shared references counted each time (stops counting at ``cap``)."""
    count, stack = 0, [value]
    while stack and count <= cap:
        item = stack.pop()
        count += 1
        stack.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
    return count


def make_input(rng: random.Random) -> FuzzInput:
    spec = _mutate(rng.choice(_SEEDS), rng) if rng.random() < 0.9 else copy.deepcopy(rng.choice(_SEEDS))
    form = rng.random()
    if form < 0.45 or (form < 0.6 and _expanded_size(spec) > 100_000):  # JSON would expand shared values
        return FuzzInput(data=spec)
    try:
        if form < 0.6:
            return FuzzInput(text=json.dumps(spec), suffix=".json")
        text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    except (ValueError, TypeError, RecursionError, yaml.YAMLError):
        return FuzzInput(data=spec)
    if form < 0.8:
        text = _damage_text(text, rng)
    return FuzzInput(text=text)


@dataclass
class Outcome:
    kind: str  # "valid", "refused" or "traceback"
    seconds: float
    detail: str = ""


def exercise(source: Any) -> None:
    """What ``benchflow validate --json`` and a campaign's start do with a spec."""
    spec = load_spec(source)
    cells = spec.cells()
    json.dumps({"spec": redact_spec(spec.model_dump(mode="json")), "content_hash": spec.content_hash(),
                "cells": [c.model_dump(mode="json") for c in cells]}, allow_nan=False)
    for cell in cells[:3]:
        assert cell.label and cell.seed >= 0


def run_input(item: FuzzInput) -> Outcome:
    start = time.perf_counter()
    try:
        if item.data is not None:
            exercise(item.data)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"spec{item.suffix}"
                path.write_text(item.text, encoding="utf-8", errors="surrogatepass")
                exercise(path)
        kind, detail = "valid", ""
    except SpecError as e:
        kind, detail = "refused", e.problems[0] if e.problems else ""
    except BaseException as e:  # noqa: BLE001 - the point is to catch everything
        if isinstance(e, KeyboardInterrupt):
            raise
        kind, detail = "traceback", "".join(traceback.format_exception(e))[-2000:]
    return Outcome(kind, time.perf_counter() - start, detail)
