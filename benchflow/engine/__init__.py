"""The campaign engine: the campaign loop and one backend's lifecycle as plain Python.

It calls its side effects through :class:`BackendSteps` and :class:`FinishSteps` (plain
callables), so ``flows/`` passes Prefect tasks in and tests pass plain functions in. Entry points:

* :func:`run_campaign` — every backend of a spec, then the finish; returns :class:`CampaignResult`;
* :func:`run_backend` — one backend's cells (GPU slots, health gate, deploy, cells, teardown,
  redeploys); returns :class:`BackendResult` (tuning trials and scale-out call this one);
* :func:`finish_campaign` — replay spool, aggregate, compare, report, final status.
"""

from benchflow.engine.backend import MAX_REDEPLOYS, BackendResult, run_backend
from benchflow.engine.campaign import (
    CampaignResult, RunFailed, completed_among, end_campaign, finish_campaign, run_campaign,
)
from benchflow.engine.cells import restart_due, with_log_tail
from benchflow.engine.steps import BackendSteps, FinishSteps, StopCheck

__all__ = ["MAX_REDEPLOYS", "BackendResult", "BackendSteps", "CampaignResult", "FinishSteps", "RunFailed",
           "StopCheck", "completed_among", "end_campaign", "finish_campaign", "restart_due", "run_backend",
           "run_campaign", "with_log_tail"]
