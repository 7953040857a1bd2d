"""The ``campaign`` flow: spec in; stored results with CIs, comparisons and a report out.

For each backend: health gate -> deploy -> ready -> its cells -> teardown (always). Then
aggregate, compare and report. Running again with the same ``campaign_id`` measures only the
cells the database does not hold yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_run
from prefect.states import Failed

from benchflow import analysis
from benchflow.campaign import (
    analysis_input, check_resume, failure_summary, new_campaign_id, validate_campaign_id,
)
from benchflow.errors import CampaignMismatchError, StorageError
from benchflow.redact import redact_spec
from benchflow.spec import CampaignSpec, load_spec
from flows.backend_cells import run_backend
from flows.hooks import clean_campaign_leftovers, reap_on_exit
from tasks.analysis import aggregate, compare
from tasks.artifacts import Progress, publish_results
from tasks.persist import open_results, persist_analysis, persist_campaign, persist_report, replay_spool


def _resolve_spec(spec: Union[CampaignSpec, str, dict]) -> CampaignSpec:
    return spec if isinstance(spec, CampaignSpec) else load_spec(spec)


@flow(name="campaign", validate_parameters=True, on_cancellation=[reap_on_exit], on_crashed=[reap_on_exit])
def campaign(spec: Union[CampaignSpec, str], campaign_id: str | None = None,
             code_path: str | None = None) -> dict[str, Any]:
    """Runs a benchmark campaign.

    Args:
        spec: the campaign spec itself, or the path of a YAML/JSON spec file.
        campaign_id: resume this campaign (skips completed cells); a new id when empty.
        code_path: a git checkout of the benchmarked code, recorded in the run manifest.
    """
    logger = get_run_logger()
    spec_obj = _resolve_spec(spec)
    cid = validate_campaign_id(campaign_id) if campaign_id else new_campaign_id(spec_obj.name)
    try:  # the database decides what is done: without it, nothing starts
        results = open_results()
        existing = results.store.get_campaign(cid)
        check_resume(cid, existing, redact_spec(spec_obj.model_dump(mode="json")), spec_obj.content_hash())
        persist_campaign(results, cid, spec_obj, status="running", flow_run_id=str(current_run.id or ""))
        cells = spec_obj.cells()
        done = results.store.completed_cell_ids(cid) & {c.id for c in cells}
    except StorageError as e:
        message = f"campaign {cid} not started, nothing was measured: {e}"
        logger.error("%s", message)
        return Failed(message=message, data={"status": "not started"})
    except CampaignMismatchError as e:
        logger.error("%s", e)
        return Failed(message=str(e), data={"status": "refused"})
    logger.info("campaign %s: %d cells, %d already completed, %d to run; results in %s", cid, len(cells),
                len(done), len(cells) - len(done), results.describe())
    progress = Progress(cid, len(cells), done=len(done))
    workdir = results.config.home / "runs" / cid
    clean_campaign_leftovers(spec_obj, cid, workdir)
    for backend in spec_obj.backends:
        todo = [c for c in cells if c.backend == backend.name and c.id not in done]
        if not todo:
            logger.info("backend %s: every cell already completed; skipped", backend.name)
            continue
        run_backend(results, spec_obj, backend, todo, cid, workdir, progress)
    return _finish(results, spec_obj, cid, code_path)


def _finish(results: Any, spec: CampaignSpec, cid: str, code_path: str | None = None) -> Any:
    logger = get_run_logger()
    problem = replay_spool(results, cid)  # cells spooled during an outage count too
    if problem is None:
        try:
            cells = results.store.cells(cid)
            summaries = results.store.summaries(cid)
        except StorageError as e:
            problem = str(e)
    if problem is not None:
        return _results_spooled(results, cid, problem)
    rows = analysis_input(cells, summaries)
    metrics = analysis.metrics_of(spec)
    aggregates = aggregate(rows, metrics, seed=spec.workload.seed)
    comparisons = compare(rows, metrics, analysis.baseline_of(spec), analysis.tolerance_of(spec),
                          seed=spec.workload.seed)
    persist_analysis(results, cid, aggregates, comparisons)
    failure = failure_summary(cells)
    status = "failed" if failure else "completed"
    campaign_row = {"id": cid, "name": spec.name, "status": status}
    markdown = publish_results(cid, campaign_row, cells, aggregates, comparisons)
    persist_report(results, cid, markdown, code_path=code_path)
    results.finish_campaign(cid, status)
    where = results.describe()
    if failure:
        logger.error("campaign %s finished with failures (measured cells are stored in %s): %s", cid, where, failure)
        return Failed(message=f"campaign {cid}: {failure}", data={"campaign_id": cid, "status": status})
    logger.info("campaign %s completed; results in %s", cid, where)
    return {"campaign_id": cid, "status": status, "aggregates": len(aggregates), "comparisons": len(comparisons)}


def _results_spooled(results: Any, cid: str, problem: str) -> Any:
    """The end of a run whose results cannot be read back: the measurements wait in the spool."""
    results.finish_campaign(cid, "failed")  # stored, or spooled; a rerun sets it again
    message = (
        f"campaign {cid}: measured, but its results could not be aggregated: {problem}. Nothing is lost: "
        f"{results.spool.count(cid)} writes wait in the spool at {results.spool.root}. Once storage is "
        f"reachable, run `benchflow flush`, then `benchflow report {cid}`; running the campaign again with "
        f"--campaign-id {cid} computes the aggregates and comparisons (completed cells are not measured again)")
    get_run_logger().error("%s", message)
    return Failed(message=message, data={"campaign_id": cid, "status": "spooled"})


def run_path(path: str | Path, campaign_id: str | None = None) -> Any:
    """Runs the flow on a spec file and returns its final state (used by ``benchflow run``)."""
    return campaign(spec=str(path), campaign_id=campaign_id, return_state=True)
