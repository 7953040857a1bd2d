"""Upper bounds on the numbers of a spec, each with the reason it exists.

A careless spec (``repetitions: 10000000``, ``max_requests: 1e12``) would otherwise validate and
then hang the expansion into cells or make numpy allocate terabytes in the middle of a campaign.
Every bound is far above what a real campaign needs; the message says why it is there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator

from benchflow.workload import MAX_TOKENS_PER_REQUEST

__all__ = [
    "MAX_BACKENDS", "MAX_LOAD_POINTS", "MAX_CELLS", "MAX_PROMPT_TOKENS_PER_CELL", "at_most",
    "Concurrency", "Rate", "Burstiness", "Requests", "Repetitions", "Seed", "Temperature", "Gibibytes", "Tokens",
]

MAX_CONCURRENCY = 50_000
MAX_RATE = 100_000.0
MAX_BURSTINESS = 1_000.0
MAX_REQUESTS = 1_000_000
MAX_REPETITIONS = 1_000
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 100.0
MAX_GIB = 1_000_000.0
#: Longer than any model's context window (and each prompt is built in memory).
MAX_TOKENS = MAX_TOKENS_PER_REQUEST
MAX_BACKENDS = 100
MAX_LOAD_POINTS = 1_000
#: Cells are expanded, stored and run one by one.
MAX_CELLS = 10_000
#: Input tokens of the prompts one cell builds up front (about 6 bytes of text each).
MAX_PROMPT_TOKENS_PER_CELL = 200_000_000


def at_most(limit: float, reason: str) -> Callable[[Any], Any]:
    """A validator refusing values above ``limit`` (and non-finite ones) with ``reason``."""

    def check(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        if value > limit:
            raise ValueError(f"must be at most {limit:,} ({reason})" if isinstance(limit, int) else f"must be at most {limit:,g} ({reason})")
        return value

    return check


Concurrency = Annotated[int, AfterValidator(at_most(
    MAX_CONCURRENCY, "each worker holds an open connection; one client process cannot drive more"))]
Rate = Annotated[float, AfterValidator(at_most(
    MAX_RATE, "requests per second; the schedule is computed up front and one client process cannot send more"))]
Burstiness = Annotated[float, AfterValidator(at_most(
    MAX_BURSTINESS, "gamma shape; far above 1 the arrivals are already evenly spaced"))]
Requests = Annotated[int, AfterValidator(at_most(
    MAX_REQUESTS, "requests per cell; a cell's prompts and records are held in memory"))]
Repetitions = Annotated[int, AfterValidator(at_most(
    MAX_REPETITIONS, "each repetition is a measured run of every backend and load point"))]
Seed = Annotated[int, AfterValidator(at_most(MAX_SEED, "seeds are stored as 64-bit integers"))]
Temperature = Annotated[float, AfterValidator(at_most(MAX_TEMPERATURE, "sampling temperature"))]
Gibibytes = Annotated[float, AfterValidator(at_most(MAX_GIB, "GiB; more than any GPU has"))]
Tokens = Annotated[int, AfterValidator(at_most(MAX_TOKENS, "tokens per request; longer than any context window"))]
