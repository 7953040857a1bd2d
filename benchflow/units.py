"""Parsing of values with units: durations ("500ms", "0.5s", "2m", "1500us") and sizes ("16g").

Every function returns plain floats/ints in the base unit the name promises (``*_s``: seconds,
``*_bytes``: bytes) and raises :class:`ValueError` with a one-line message on bad input, so that
pydantic validators can use them directly and the spec loader can report the message with its path.
"""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_UNITS_S", "format_duration_s", "parse_duration_s", "parse_size_bytes"]

#: Seconds per unit. ``us`` and ``µs`` are microseconds; ``m`` is minutes (not metres, not milli).
DURATION_UNITS_S: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DURATION_RE = re.compile(rf"^\s*({_NUMBER})\s*([a-zµ]+)?\s*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration_s(value: object, *, allow_bare: bool = False) -> float:
    """Returns ``value`` in seconds.

    Strings need a unit (``"500ms"``, ``"0.5 s"``, ``"2m"``, ``"1500us"``). A bare number (an
    ``int``/``float``, or a string without a unit) is accepted, as seconds, only when
    ``allow_bare`` is true: SLO thresholds require a unit so that ``500`` never silently means
    500 seconds. Booleans, NaN, infinities and negative durations are rejected.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration such as '500ms' or '2s', got {value!r}")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("duration is too large (beyond 1e308 seconds)") from None
        if not allow_bare:
            raise ValueError(f"a unit is required, e.g. '{seconds:g}ms' or '{seconds:g}s' (got bare number {seconds:g})")
    else:
        m = _DURATION_RE.match(value)
        if m is None:
            raise ValueError(f"cannot parse duration {value!r}; write e.g. '500ms', '0.5s', '2m', '1500us'")
        number, unit = float(m.group(1)), m.group(2)
        if unit is None:
            if not allow_bare:
                raise ValueError(f"a unit is required, e.g. '{value.strip()}ms' or '{value.strip()}s' (got {value!r})")
            seconds = number
        elif unit not in DURATION_UNITS_S:
            units = ", ".join(DURATION_UNITS_S)
            raise ValueError(f"unknown duration unit {unit!r} in {value!r}; use one of {units}")
        else:
            seconds = number * DURATION_UNITS_S[unit]
    if not math.isfinite(seconds):
        raise ValueError(f"duration must be finite, got {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


def format_duration_s(seconds: float) -> str:
    """The exact inverse of :func:`parse_duration_s` for a float: ``0.5 -> "0.5s"``.

    ``repr`` keeps every bit of the float, so ``parse_duration_s(format_duration_s(x)) == x``.
    """
    return f"{float(seconds)!r}s"


def parse_size_bytes(value: object) -> int:
    """Returns a size in bytes: an int is bytes; strings take k/m/g/t (binary, Docker style):
    ``"16g"``, ``"512m"``, ``"1GiB"``, ``"64kb"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size such as '16g' or '512m', got {value!r}")
    if isinstance(value, int):
        if value >= 2**63:
            raise ValueError("size too large (it must fit in 64 bits)")
        if value <= 0:
            raise ValueError(f"size must be > 0 bytes, got {value}")
        return value
    m = _SIZE_RE.match(value)
    if m is None:
        raise ValueError(f"cannot parse size {value!r}; write e.g. '16g', '512m' or a number of bytes")
    number = float(m.group(1))
    if not math.isfinite(number) or number * _SIZE_FACTORS[m.group(2).lower()] >= 2**63:
        raise ValueError(f"size too large: {value!r}")
    size = int(number * _SIZE_FACTORS[m.group(2).lower()])
    if size <= 0:
        raise ValueError(f"size must be > 0 bytes, got {value!r}")
    return size
