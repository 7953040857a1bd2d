"""Per-cell rules of the engine: the restart policy and the cause of a failed cell (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchflow.launch.base import tail
from benchflow.spec import Cell

if TYPE_CHECKING:  # the runner pulls in pandas and the load generator
    from benchflow.runner import CellOutcome

#: Separates a cell's error from the backend log lines appended to it.
LOG_TAIL_MARKER = "--- last lines of the backend log ---"
#: How many backend log lines a failed cell's error carries.
LOG_TAIL_LINES = 12


def restart_due(policy: str, previous: Cell, cell: Cell) -> bool:
    """``restart`` (cold-start studies): ``per_cell`` redeploys before every cell but the first,
    ``per_repetition`` whenever the repetition changes, ``never`` never."""
    if policy == "per_cell":
        return True
    return policy == "per_repetition" and cell.repetition != previous.repetition


def with_log_tail(outcome: CellOutcome, log_slice: str, dead: str | None) -> CellOutcome:
    """A cell that failed because its backend died or stalled carries the last lines the backend
    logged during the cell (the crash message, a traceback) in its error. Idempotent."""
    if outcome.status not in ("failed", "stalled") or not log_slice.strip():
        return outcome
    if dead is None and outcome.status != "stalled":
        return outcome
    error = outcome.error or f"backend died during the cell ({dead})"
    if LOG_TAIL_MARKER not in error:
        outcome.error = f"{error}\n{LOG_TAIL_MARKER}\n{tail(log_slice, LOG_TAIL_LINES)}"
    return outcome
