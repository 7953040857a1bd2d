"""Fault knobs: decides, per completion request received, whether the server misbehaves.

Pure and seeded, so the same ``--seed`` gives the same sequence of injected errors.
"""

from __future__ import annotations

import enum
import random


class FaultAction(enum.Enum):
    SERVE = "serve"
    #: The process exits with status 1 (``--crash-after N``: the (N+1)-th request).
    CRASH = "crash"
    #: The engine stops for good; this and every open stream hang (``--stall-after N``).
    STALL = "stall"
    #: Answer 500 (``--error-rate F``).
    ERROR = "error"


class FaultPlan:
    """What to do with the n-th (1-based) completion request."""

    def __init__(self, *, crash_after: int | None = None, stall_after: int | None = None,
                 error_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.crash_after = crash_after
        self.stall_after = stall_after
        self.error_rate = error_rate
        self._rng = random.Random(seed)

    def on_request(self, n: int) -> FaultAction:
        """Called once per request, in arrival order, with ``n`` = 1, 2, ..."""
        if self.crash_after is not None and n > self.crash_after:
            return FaultAction.CRASH
        if self.stall_after is not None and n > self.stall_after:
            return FaultAction.STALL
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            return FaultAction.ERROR
        return FaultAction.SERVE
