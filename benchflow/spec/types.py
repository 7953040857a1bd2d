"""Building blocks shared by the spec models: the strict base model, duration types, limits, hashing."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any

from annotated_types import Gt
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

from benchflow.units import format_duration_s, parse_duration_s

__all__ = [
    "StrictModel", "Seconds", "SloSeconds", "canonical_json", "sha256_hex", "check_json_value", "no_nul",
    "MAX_DURATION_S",
]

#: The longest duration a spec may give (7 days): longer timeouts and cell limits are typos, and
#: event-loop timers overflow on absurd values.
MAX_DURATION_S = 7 * 24 * 3600.0
#: Nesting depth allowed inside free-form values (engine-arg mappings).
MAX_VALUE_DEPTH = 32


class StrictModel(BaseModel):
    """Unknown keys are errors; validated specs are immutable; floats are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def no_nul(value: str) -> str:
    """Strings that reach a command line, an environment or a file name cannot hold NUL bytes."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain a NUL byte (\\x00)")
    return value


def check_json_value(value: Any, depth: int = 0) -> Any:
    """``value`` if it is plain JSON (string keys, finite numbers, no NUL bytes, bounded depth);
    raises ValueError naming what is wrong otherwise."""
    if depth > MAX_VALUE_DEPTH:
        raise ValueError(f"nested more than {MAX_VALUE_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"numbers must be finite, got {value!r}")
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"mapping keys must be strings, got {k!r}")
            no_nul(k)
            check_json_value(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_json_value(v, depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ValueError(f"not a JSON value: {type(value).__name__}")
    return value


def _seconds(value: Any) -> Any:
    """A ``*_s`` field: a bare number is seconds; a string may carry a unit ("10m", "500ms")."""
    if isinstance(value, (bool, int, float, str)):
        return parse_duration_s(value, allow_bare=True)
    return value  # let pydantic report the wrong type


def _at_most_max_duration(seconds: float) -> float:
    if seconds > MAX_DURATION_S:
        raise ValueError(f"must be at most 7 days ({MAX_DURATION_S:g} s), got {seconds:g} s")
    return seconds


#: Seconds as a float; YAML may also say "10m" or "500ms".
Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    AfterValidator(_at_most_max_duration),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}], "description": "seconds, or e.g. '10m'"}),
]

#: An SLO threshold: the input MUST carry a unit ("500ms"); stored as seconds (float); JSON output
#: is an exact string ("0.5s") so that a dumped spec validates again to the same value.
SloSeconds = Annotated[
    float,
    BeforeValidator(lambda v: parse_duration_s(v, allow_bare=False)),
    Gt(0),
    AfterValidator(_at_most_max_duration),
    PlainSerializer(format_duration_s, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|min|h)$", "examples": ["500ms"]}),
]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data always gives equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(obj: Any) -> str:
    """sha256 of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
