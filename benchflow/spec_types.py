"""Building blocks shared by the spec models: the strict base model, duration types, hashing."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from annotated_types import Gt
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

from benchflow.units import format_duration_s, parse_duration_s

__all__ = ["StrictModel", "Seconds", "SloSeconds", "canonical_json", "sha256_hex"]


class StrictModel(BaseModel):
    """Unknown keys are errors; validated specs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _seconds(value: Any) -> Any:
    """A ``*_s`` field: a bare number is seconds; a string may carry a unit ("10m", "500ms")."""
    if isinstance(value, (bool, int, float, str)):
        return parse_duration_s(value, allow_bare=True)
    return value  # let pydantic report the wrong type


#: Seconds as a float; YAML may also say "10m" or "500ms".
Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}], "description": "seconds, or e.g. '10m'"}),
]

#: An SLO threshold: the input MUST carry a unit ("500ms"); stored as seconds (float); JSON output
#: is an exact string ("0.5s") so that a dumped spec validates again to the same value.
SloSeconds = Annotated[
    float,
    BeforeValidator(lambda v: parse_duration_s(v, allow_bare=False)),
    Gt(0),
    PlainSerializer(format_duration_s, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|min|h)$", "examples": ["500ms"]}),
]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data always gives equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(obj: Any) -> str:
    """sha256 of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
