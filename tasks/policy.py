"""Shared task policy: which failures are worth a retry."""

from __future__ import annotations

from benchflow.errors import BackendStartError, NvmlError


def retry_if_transient(task, task_run, state) -> bool:
    """``retry_condition_fn``: retry transient start and NVML failures only.

    A bad spec, a command that exits at once, or a failed SLO is never retried.
    """
    try:
        state.result()
    except (BackendStartError, NvmlError) as e:
        return bool(getattr(e, "transient", False))
    except Exception:  # noqa: BLE001 - anything else is not transient by definition
        return False
    return False
