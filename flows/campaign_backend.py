"""A campaign fanned out by backend (``placement: pool``).

``campaign-backend`` runs ONE backend's part of a campaign (GPU slots -> health gate -> deploy ->
its cells -> teardown) with :func:`benchflow.engine.run_backend` and the same steps as the
``campaign`` flow (:func:`flows.backend_cells.backend_steps`); it measures only the backend's cells
that the results database does not hold as completed, so a rerun or a resumed campaign measures
only what is missing. The parent (:func:`fan_out`, called by the ``campaign`` flow) starts one run
of the ``campaign-backend/backend`` deployment per backend with ``run_deployment(..., timeout=0)``
on the GPU work pool, at most ``spec.parallel`` in flight, polls their states, and then finishes
the campaign (aggregate, compare, report) from the shared store.

Faults:

- a child that ends Failed/Crashed/Cancelled is named with its state message in the parent's
  message, and the campaign ends ``failed``;
- a child that ends ``Crashed`` is started once more: its finished cells are stored, so the new
  run measures only the rest. A child ends Crashed when its process dies (Prefect's engine reports
  it), when its worker is SIGKILLed (the child's process notices, :func:`die_with_parent`, and
  stops itself with SIGTERM, which Prefect's engine reports as Crashed), when the server's zombie
  automation (``benchflow infra bootstrap``) sees its heartbeats stop, or when the parent itself
  sees no heartbeat for ``stale_after(PREFECT_FLOWS_HEARTBEAT_FREQUENCY)`` seconds and marks it
  Crashed (:class:`benchflow.engine.liveness.ChildWatch`);
- a child that no worker picks up within ``$BENCHFLOW_POOL_PICKUP_S`` (600 s) is cancelled and
  named in the parent's failure: the parent never waits without a bound;
- a cancel of the parent (noticed by the campaign's cancel watcher, or the parent's process being
  stopped by its worker) sets every child still in flight to ``Cancelling``; the on_cancellation
  hook :func:`cancel_children` does the same from the worker.
"""

from __future__ import annotations

import logging
from typing import Any, Union

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_run

from benchflow import engine
from benchflow.campaign import failure_summary
from benchflow.engine import CampaignResult, FinishSteps, StopCheck
from benchflow.engine.campaign import cells_to_run
from benchflow.engine.fanout import MAX_CRASH_RETRIES, POLL_S, backends_to_run, dispatch  # noqa: F401
from benchflow.engine.liveness import PICKUP_S, ChildWatch, die_with_parent, stale_after
from benchflow.errors import CampaignCancelled, ResultsNotStoredError, StorageError
from benchflow.redact import install_log_redaction
from benchflow.spec import CampaignSpec, Cell, load_spec
from flows.backend_cells import backend_steps
from flows.hooks import reap_on_exit
from flows.states import cancelled, failed
from tasks.cancel import CancelWatcher
from tasks.persist import open_results

#: The deployment each backend of a ``placement: pool`` campaign runs as.
BACKEND_DEPLOYMENT = "campaign-backend/backend"
#: Seconds a child may wait for a worker (Scheduled/Pending) before the parent cancels it and fails.
PICKUP_ENV = "BENCHFLOW_POOL_PICKUP_S"
#: Seconds a running child may go without a heartbeat before the parent marks it Crashed.
STALE_ENV = "BENCHFLOW_POOL_STALE_S"

log = logging.getLogger(__name__)


def _backend_run_name() -> str:
    params = current_run.parameters or {}
    return f"{params.get('campaign_id') or 'campaign'} · {params.get('backend') or 'backend'}"


@flow(name="campaign-backend", flow_run_name=_backend_run_name, validate_parameters=False,
      on_cancellation=[reap_on_exit], on_crashed=[reap_on_exit])
def campaign_backend(spec: Union[CampaignSpec, str], campaign_id: str, backend: str) -> dict[str, Any]:
    """Runs one backend's cells of a campaign (started by the campaign flow with ``placement: pool``).

    Args:
        spec: the campaign's spec (a mapping or the path of a spec file).
        campaign_id: the campaign, already stored as running by the parent run.
        backend: the name of the backend of the spec to run.
    """
    install_log_redaction()
    die_with_parent()  # a SIGKILLed worker takes this run (and so its backend and clients) with it
    logger = get_run_logger()
    spec_obj = spec if isinstance(spec, CampaignSpec) else load_spec(spec)
    summary: dict[str, Any] = {"campaign_id": campaign_id, "backend": backend}
    try:
        backend_spec = spec_obj.backend(backend)
    except KeyError:
        return failed(f"campaign {campaign_id}: the spec has no backend {backend!r}", summary)
    try:
        results = open_results()
        done = results.store.completed_cell_ids(campaign_id)
    except StorageError as e:
        return failed(f"backend {backend}: not started, the results store is unreachable: {e}", summary)
    todo = cells_to_run(spec_obj.cells(), backend, done)
    summary["cells"] = len(todo)
    if not todo:
        logger.info("campaign %s backend %s: every cell already completed; nothing to run", campaign_id, backend)
        return {**summary, "status": "completed"}
    logger.info("campaign %s backend %s: %d cells to run", campaign_id, backend, len(todo))
    workdir = results.config.home / "runs" / campaign_id
    with CancelWatcher(current_run.id, also=(current_run.root_flow_run_id,)) as cancel:
        steps = backend_steps(results, spec_obj, campaign_id, workdir, None, cancel)
        try:
            out = engine.run_backend(steps, spec_obj, backend_spec, todo, workdir=workdir)
        except CampaignCancelled as e:
            return cancelled(f"backend {backend} cancelled: {e}", {**summary, "status": "cancelled"})
        except ResultsNotStoredError as e:
            return failed(f"backend {backend} stopped: {e}", {**summary, "status": "failed"})
    summary.update(measured=out.measured, failed=out.failed, skipped=out.skipped)
    if out.failed:
        rows = [r for r in _stored_rows(results, campaign_id) if r.get("backend_name") == backend]
        why = failure_summary(rows) or f"{out.failed} cells failed"
        return failed(f"backend {backend}: {why}", {**summary, "status": "failed"})
    return {**summary, "status": "completed"}


def _stored_rows(results: Any, campaign_id: str) -> list[Any]:
    try:
        return list(results.store.cell_records(campaign_id))
    except StorageError:
        return []


# -- the parent's side -------------------------------------------------------------------------


def pool_available(deployment: str) -> str | None:
    """None when ``deployment`` exists on the Prefect API, else why not (the embedded default of
    ``benchflow run`` has no deployments and no workers)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(deployment)
    except Exception as e:  # noqa: BLE001 - ObjectNotFound, or no API
        return f"deployment {deployment} not found on the Prefect API ({type(e).__name__})"
    return None


def fan_out(spec: CampaignSpec, cid: str, cells: list[Cell], finish: FinishSteps, cancel: StopCheck, *,
            done: set[str] | frozenset[str] = frozenset(), deployment: str = BACKEND_DEPLOYMENT,
            job_variables: dict[str, Any] | None = None, poll_s: float = POLL_S) -> CampaignResult:
    """The ``placement: pool`` campaign: one child run per backend with cells to run, then the finish."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    params = {"spec": spec.model_dump(mode="json", exclude_none=True), "campaign_id": cid}

    def start(name: str) -> Any:
        run = run_deployment(deployment, parameters={**params, "backend": name}, timeout=0,
                             job_variables=job_variables, flow_run_name=f"{cid} · {name}")
        logger.info("campaign %s: backend %s runs as flow run %s (%s)", cid, name, run.name, run.id)
        return run.id

    names = backends_to_run(spec, cells, done)
    logger.info("campaign %s: %d backends on the work pool, at most %d at once", cid, len(names), spec.parallel)
    try:
        outcomes = dispatch(names, spec.parallel, start, _state_of, cancel, cancel_runs, logger=logger,
                            poll_s=poll_s, watch=child_watch(), mark_crashed=mark_crashed)
        result = engine.finish_campaign(spec, cid, finish)
    except CampaignCancelled as e:
        return engine.end_campaign(finish, cid, "cancelled",
                                   f"campaign {cid} cancelled: {e}. Its backend runs are cancelled and measured cells "
                                   f"stored; run it again with --campaign-id {cid} to measure the rest")
    except Exception as e:  # noqa: BLE001 - never leave a campaign running
        logger.error("campaign %s: unexpected error", cid, exc_info=True)
        return engine.end_campaign(finish, cid, "failed", f"campaign {cid} failed: {type(e).__name__}: {e}")
    bad = [f"backend {n} ({kind.lower()}): {msg.splitlines()[0] if msg else 'no message'}"
           for n, (kind, msg) in outcomes.items() if kind != "COMPLETED"]
    if bad and result.status in ("completed", "failed"):
        message = f"campaign {cid}: " + "; ".join(bad)
        if result.message:
            message += f" | {result.message}"
        return engine.end_campaign(finish, cid, "failed", message)
    return result


def child_watch(env: dict[str, str] | None = None) -> ChildWatch:
    """The parent's bound on its children: ``$BENCHFLOW_POOL_PICKUP_S`` (default 600) to be picked up,
    ``$BENCHFLOW_POOL_STALE_S`` (default: 4 heartbeats of ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``) of silence."""
    import os

    from prefect.settings import get_current_settings

    env = dict(os.environ if env is None else env)
    stale = _seconds(env, STALE_ENV, stale_after(get_current_settings().flows.heartbeat_frequency))
    return ChildWatch(heartbeat_of=last_heartbeat, stale_s=stale, pickup_s=_seconds(env, PICKUP_ENV, PICKUP_S))


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    from benchflow.errors import BenchflowError
    from benchflow.units import parse_duration_s

    raw = env.get(name)
    if not raw:
        return default
    try:
        value = parse_duration_s(raw, allow_bare=True)
    except Exception as e:  # noqa: BLE001 - said in one line below
        raise BenchflowError(f"{name}: expected a duration in seconds (e.g. 600 or 10m), got {raw!r}") from e
    if value <= 0:
        raise BenchflowError(f"{name}: must be > 0, got {raw!r}")
    return value


def last_heartbeat(run_id: Any) -> float | None:
    """Epoch seconds of the newest ``prefect.flow-run.heartbeat`` event of the run (None: none, or no API)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOrder, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                      resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]), order=EventOrder.DESC)
    try:
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=flt, limit=1)
    except Exception as e:  # noqa: BLE001 - a blip: the bound is long, ask again next time
        log.debug("reading heartbeats of flow run %s: %s", run_id, e)
        return None
    return page.events[0].occurred.timestamp() if page.events else None


def mark_crashed(run_id: Any, message: str) -> None:
    """Sets a child run whose heartbeats stopped to Crashed (forced: nobody else will)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
    except Exception as e:  # noqa: BLE001 - it is started again either way
        log.warning("could not mark backend run %s crashed: %s", run_id, e)


def _state_of(run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id).state
    except Exception as e:  # noqa: BLE001 - a blip of the API: ask again next time
        log.debug("reading flow run %s: %s", run_id, e)
        return None


def cancel_runs(run_ids: list[Any], message: str = "the parent campaign run was cancelled") -> None:
    """Sets each run to Cancelling: its worker stops its process, whose hooks tear its backend down."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            try:
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    continue
                client.set_flow_run_state(run_id, Cancelling(message=message), force=True)
            except Exception as e:  # noqa: BLE001 - cancel the others anyway
                log.warning("could not cancel backend run %s: %s", run_id, e)


def cancel_children(flow, flow_run, state) -> None:
    """``on_cancellation`` of the campaign flow: its campaign-backend runs still going are cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    try:
        with get_client(sync_client=True) as client:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id])))
        running = [c.id for c in children if c.state is not None and not c.state.is_final()]
        if running:
            cancel_runs(running)
            log.warning("flow run %s cancelled: cancelled its %d backend runs", flow_run.id, len(running))
    except Exception as e:  # noqa: BLE001 - never raise from a hook
        log.warning("flow run %s: could not cancel its backend runs: %s", flow_run.id, e)
