"""Constraints between tuned flags, e.g. ``max-num-batched-tokens >= max-num-seqs``.

A tiny parser, no ``eval``: ``SIDE OP SIDE`` where a side is a number, a flag name, or
``NUMBER * flag``, and OP is one of ``<= >= < > == !=``. :meth:`Constraint.violation` gives the
Optuna constraint value: ``<= 0`` when the configuration satisfies it, else how far it is off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_OPS = ("<=", ">=", "==", "!=", "<", ">")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FLAG = r"[A-Za-z][A-Za-z0-9_.-]*"
_SIDE_RE = re.compile(rf"^\s*(?:(?P<num>{_NUMBER})\s*(?:\*\s*(?P<flag1>{_FLAG}))?|(?P<flag2>{_FLAG}))\s*$")


class ConstraintSyntaxError(ValueError):
    """A constraint that does not parse."""


@dataclass(frozen=True)
class Side:
    factor: float
    flag: str | None  #: None: a constant (``factor``)

    def value(self, params: dict[str, Any]) -> float:
        if self.flag is None:
            return self.factor
        return self.factor * float(params[self.flag])


@dataclass(frozen=True)
class Constraint:
    text: str
    left: Side
    op: str
    right: Side

    @property
    def flags(self) -> list[str]:
        return [s.flag for s in (self.left, self.right) if s.flag is not None]

    def holds(self, params: dict[str, Any]) -> bool:
        return self.violation(params) <= 0

    def violation(self, params: dict[str, Any]) -> float:
        """``<= 0`` when it holds; otherwise > 0 (the gap, at least 1 for strict and (in)equality)."""
        a, b = self.left.value(params), self.right.value(params)
        if self.op == "<=":
            return a - b
        if self.op == ">=":
            return b - a
        if self.op == "<":
            return 0.0 if a < b else a - b + 1.0
        if self.op == ">":
            return 0.0 if a > b else b - a + 1.0
        if self.op == "==":
            return abs(a - b)
        return 0.0 if a != b else 1.0  # !=


def _side(text: str, whole: str) -> Side:
    m = _SIDE_RE.match(text)
    if not m:
        raise ConstraintSyntaxError(f"cannot read {text.strip()!r} in {whole!r}: write a flag name, a number, "
                                    "or NUMBER * flag")
    if m.group("flag2"):
        return Side(1.0, m.group("flag2"))
    return Side(float(m.group("num")), m.group("flag1"))


def parse_constraint(text: str) -> Constraint:
    """Parses ``text``; raises :class:`ConstraintSyntaxError` with a one-line reason."""
    if not isinstance(text, str) or not text.strip():
        raise ConstraintSyntaxError("a constraint must be a non-empty string like 'a >= b'")
    for op in _OPS:  # two-character operators first
        if op in text:
            left, _, right = text.partition(op)
            if any(o in right for o in _OPS):
                raise ConstraintSyntaxError(f"one comparison per constraint: {text!r}")
            c = Constraint(text.strip(), _side(left, text), op, _side(right, text))
            if not c.flags:
                raise ConstraintSyntaxError(f"compares no flag: {text!r}")
            return c
    raise ConstraintSyntaxError(f"no comparison (one of {' '.join(_OPS)}) in {text!r}")
