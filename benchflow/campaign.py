"""Campaign bookkeeping shared by the flow and the CLI: ids, the resume check, and the rows
that go to the results store. Prefect-free."""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from benchflow.errors import CampaignMismatchError
from benchflow.results_types import CellResult, CellRow, CellSummary
from benchflow.spec import Cell
# The one campaign-id rule lives in the store's key module; re-exported here for the CLI and flows.
from benchflow.store.keys import validate_campaign_id as validate_campaign_id

if TYPE_CHECKING:  # the runner pulls in pandas and the load generator
    from benchflow.runner import CellOutcome


def slug(text: str, max_len: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-") or "campaign"


def new_campaign_id(spec_name: str, now: datetime | None = None) -> str:
    """``<name-slug>-<UTC timestamp>-<4 hex>``: readable, sortable and unique."""
    now = now or datetime.now(UTC)
    return f"{slug(spec_name)}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def spec_diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like specs: ``path: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub}: added ({new[key]!r})")
            elif key not in new:
                out.append(f"{sub}: removed (was {old[key]!r})")
            else:
                out += spec_diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in spec_diff(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path or '<spec>'}: {old!r} -> {new!r}"]


def check_resume(campaign_id: str, existing: dict[str, Any] | None, spec_json: dict[str, Any], spec_hash: str) -> None:
    """Refuses to resume ``campaign_id`` under a spec that differs from the stored one."""
    if existing is None or existing.get("spec_hash") == spec_hash:
        return
    diffs = spec_diff(existing.get("spec") or {}, spec_json) or ["(content hash differs)"]
    shown = "; ".join(diffs[:10]) + (f"; … {len(diffs) - 10} more" if len(diffs) > 10 else "")
    raise CampaignMismatchError(
        f"campaign {campaign_id} exists with a different spec; refusing to resume. Differences: {shown}. "
        "Use a new --campaign-id (or none) to start a fresh campaign.")


def _cell_identity(cell: Cell, host: str | None) -> dict[str, Any]:
    return {"cell_id": cell.id, "backend_name": cell.backend, "load_label": cell.load_point.label,
            "load_point": cell.load_point.model_dump(), "repetition": cell.repetition, "position": cell.index,
            "host": host or socket.gethostname()}


def stored_status(status: str, error: str | None) -> tuple[str, str | None]:
    """The cell status the store accepts, and the error: an outcome the store has no status for
    (``stalled``, ``cancelled``) is stored as ``failed`` with its own status leading the error."""
    from typing import get_args

    from benchflow.store.rows import CellStatus

    if status in get_args(CellStatus):
        return status, error
    if error and status in error.splitlines()[0].lower():
        return "failed", error
    return "failed", f"{status}: {error}" if error else status


def cell_row(cell: Cell, outcome: CellOutcome, *, host: str | None = None, gpu_uuids: list[str] | None = None,
             attempt: int = 1) -> CellRow:
    """The ``cells`` row of a measured (or failed) cell."""
    summary = outcome.summary or {}
    status, error = stored_status(outcome.status, outcome.error)
    return CellRow.model_validate({
        **_cell_identity(cell, host), "status": status, "started_at": outcome.started_at,
        "finished_at": outcome.finished_at, "window_s": summary.get("duration_s"), "gpu_uuids": gpu_uuids or [],
        "error": error, "invalid_reason": summary.get("invalid"), "attempt": attempt,
    })


def failed_cell_row(cell: Cell, error: str, *, status: str = "failed", host: str | None = None) -> CellRow:
    """The ``cells`` row of a cell that never ran (backend never ready, unhealthy GPU, ...)."""
    now = datetime.now(UTC)
    return CellRow.model_validate({
        **_cell_identity(cell, host), "status": status, "started_at": now, "finished_at": now, "window_s": None,
        "gpu_uuids": [], "error": error, "invalid_reason": None, "attempt": 1,
    })


def analysis_input(cells: Sequence[CellRow], summaries: Mapping[str, CellSummary]) -> list[CellResult]:
    """Joins stored cell rows with their summaries (``cell_id -> summary``, as
    :meth:`~benchflow.store.db.ResultStore.summary_records` returns them) for :mod:`benchflow.analysis`."""
    return [CellResult(cell_id=c.cell_id, backend_name=c.backend_name, load_label=c.load_label,
                       repetition=c.repetition, status=c.status, error=c.error,
                       summary=summaries.get(c.cell_id) or CellSummary())
            for c in cells]


#: Stored cell statuses that make a campaign fail.
FAILED_STATUSES = ("failed", "stalled")


def failure_summary(cells: Sequence[CellRow | Mapping[str, Any]]) -> str | None:
    """One line naming each failed cell and why (None when none failed)."""
    failed = [c for c in cells if c.get("status") in FAILED_STATUSES]
    if not failed:
        return None
    lines = [f"{c['backend_name']} {c['load_label']} rep {c['repetition']}: {(c.get('error') or '').splitlines()[0] if c.get('error') else 'unknown'}"
             for c in failed]
    return f"{len(failed)} of {len(cells)} cells failed: " + "; ".join(lines[:10]) + (" …" if len(lines) > 10 else "")
