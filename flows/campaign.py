"""The ``campaign`` flow: spec in; stored results with CIs, comparisons and a report out.

Wiring only: it opens the results store, builds the engine's steps from tasks
(:mod:`flows.backend_cells`) and runs :func:`benchflow.engine.run_campaign`, which holds the
behaviour (each backend: health gate -> deploy -> ready -> its cells -> teardown, always; then
aggregate, compare and report). Running again with the same ``campaign_id`` measures only the cells
the database does not hold yet. A cancel request (UI, CLI, API) is noticed between cells and during
a cell, also without a worker; the run then ends ``Cancelled`` and the campaign ``cancelled``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from prefect import flow, get_run_logger
from prefect.states import State
from prefect.runtime import flow_run as current_run

from benchflow import engine
from benchflow.campaign import check_resume, new_campaign_id, validate_campaign_id
from benchflow.errors import CampaignMismatchError, StorageError
from benchflow.redact import install_log_redaction, redact_spec
from benchflow.spec import CampaignSpec, load_spec
from flows.backend_cells import backend_steps, finish_steps
from flows.campaign_backend import BACKEND_DEPLOYMENT, cancel_children, fan_out, pool_available
from flows.hooks import clean_campaign_leftovers, mark_cancelled, reap_on_exit, running_campaign
from flows.states import campaign_state, failed
from tasks.artifacts import Progress
from tasks.cancel import CancelWatcher
from tasks.persist import open_results, persist_campaign


def _resolve_spec(spec: Union[CampaignSpec, str, dict]) -> CampaignSpec:
    """The spec, validated by benchflow's own loader: every problem is named by the spec's own field
    path (``backends[1].name: ...``), never by pydantic's internal union paths."""
    return spec if isinstance(spec, CampaignSpec) else load_spec(spec)


def run_name(prefix: str = "", default_spec: CampaignSpec | str | dict[str, Any] | None = None) -> str:
    """The flow run's name in the UI: the campaign's name and the start time,
    ``demo-max-num-seqs · 20261129-1254`` (``prefix`` first: ``nightly · ...``)."""
    from datetime import UTC, datetime

    params = current_run.parameters or {}
    spec = params.get("spec") or default_spec
    try:
        name = spec.name if isinstance(spec, CampaignSpec) else (
            spec.get("name") if isinstance(spec, dict) else load_spec(spec).name if spec else None)
    except Exception:  # noqa: BLE001 - a bad spec is reported by the flow itself, not by its name
        name = None
    return f"{prefix}{name or 'campaign'} · {datetime.now(UTC):%Y%m%d-%H%M}"


# Prefect's own parameter validation is off: for ``Union[CampaignSpec, str]`` it reports pydantic's
# internal paths (``spec.function-after[_cross_checks(), CampaignSpec]...``). The deployment's
# parameter schema (types, unknown keys; a 409 from the API) still comes from the signature, and the
# loader below checks everything else with messages in the spec's own words.
@flow(name="campaign", flow_run_name=run_name, validate_parameters=False,
      on_cancellation=[mark_cancelled, cancel_children, reap_on_exit], on_crashed=[reap_on_exit])
def campaign(spec: Union[CampaignSpec, str], campaign_id: str | None = None,
             code_path: str | None = None, backend_deployment: str = BACKEND_DEPLOYMENT,
             backend_job_variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs a benchmark campaign.

    Args:
        spec: the campaign spec itself, or the path of a YAML/JSON spec file.
        campaign_id: resume this campaign (skips completed cells); a new id when empty.
        code_path: a git checkout of the benchmarked code, recorded in the run manifest.
        backend_deployment: with ``placement: pool``, the deployment each backend runs as.
        backend_job_variables: with ``placement: pool``, job variables of the backend runs (e.g. env).
    """
    install_log_redaction()  # under a worker too: no secret reaches Prefect's run logs
    logger = get_run_logger()
    spec_obj = _resolve_spec(spec)
    cid = validate_campaign_id(campaign_id) if campaign_id else new_campaign_id(spec_obj.name)
    cells = spec_obj.cells()
    try:  # the database decides what is done: without it, nothing starts
        results = open_results()
        existing = results.store.get_campaign(cid)
        check_resume(cid, existing, redact_spec(spec_obj.model_dump(mode="json")), spec_obj.content_hash())
        persist_campaign(results, cid, spec_obj, status="running", flow_run_id=str(current_run.id or ""))
        done = engine.completed_among(cells, results.store.completed_cell_ids(cid))
    except StorageError as e:
        message = f"campaign {cid} not started, nothing was measured: {e}"
        logger.error("%s", message)
        return failed(message, {"campaign_id": cid, "status": "not started"})
    except CampaignMismatchError as e:
        logger.error("%s", e)
        return failed(str(e), {"campaign_id": cid, "status": "refused"})
    logger.info("campaign %s: %d cells, %d already completed, %d to run; results in %s", cid, len(cells),
                len(done), len(cells) - len(done), results.describe())
    finish = finish_steps(results, cid, code_path)
    workdir = results.config.home / "runs" / cid
    watcher = CancelWatcher(current_run.id, also=(current_run.root_flow_run_id,))
    with running_campaign(current_run.id, results, cid), watcher as cancel:
        try:
            clean_campaign_leftovers(spec_obj, cid, workdir)
            progress = Progress(cid, len(cells), done=len(done), name=spec_obj.name)
            steps = backend_steps(results, spec_obj, cid, workdir, progress, cancel)
        except Exception as e:  # noqa: BLE001 - a campaign is never left running
            result = engine.end_campaign(finish, cid, "failed", f"campaign {cid} failed: {type(e).__name__}: {e}")
        else:
            pool = spec_obj.placement == "pool"
            why_not = pool_available(backend_deployment) if pool else None
            if why_not:
                logger.warning("campaign %s: placement: pool needs the %s deployment and a worker on the GPU pool "
                               "(%s); its backends run here, one after another", cid, backend_deployment, why_not)
            if pool and not why_not:
                result = fan_out(spec_obj, cid, cells, finish, cancel, done=done, deployment=backend_deployment,
                                 job_variables=backend_job_variables)
            else:
                result = engine.run_campaign(spec_obj, cid, cells, steps, finish, done=done, workdir=workdir)
    return campaign_state(result)


def run_path(path: str | Path, campaign_id: str | None = None) -> State:
    """Runs the flow on a spec file and returns its final state (used by ``benchflow run``)."""
    return campaign(spec=str(path), campaign_id=campaign_id, return_state=True)
