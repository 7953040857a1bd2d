"""The nightly sweep (deployment ``campaign/nightly``): run the campaign, then compare it with its baseline.

The baseline is a pinned campaign of the same spec name, else the last successful nightly of that
name (spec ``regression.baseline``). Each (backend, load point, metric) is compared with the
bootstrap CI of the ratio; a regression is a CI wholly beyond the tolerance. The comparisons are
stored (kind "regression"), published as a keyed markdown artifact, and a regression ends the run
Failed with the regressions in its message and emits ``benchflow.regression.detected``.
"""

from __future__ import annotations

from typing import Any, Union

from prefect import flow, get_run_logger

from benchflow import regression
from benchflow.campaign import analysis_input, new_campaign_id, validate_campaign_id
from benchflow.spec import CampaignSpec, load_spec
from benchflow.store.results import Results
from flows.campaign import campaign, run_name
from flows.states import cancelled, failed
from tasks.persist import open_results
from tasks.regression import check_regressions, emit_regression_event, persist_regressions, publish_regressions

DEFAULT_SPEC = "deployments/campaigns/nightly.yaml"


def nightly_spec(spec: Union[CampaignSpec, str, dict]) -> CampaignSpec:
    """The spec, labelled ``kind: nightly`` (stored as the campaign's kind; baselines are found by it)."""
    spec_obj = spec if isinstance(spec, CampaignSpec) else load_spec(spec)
    return spec_obj.model_copy(update={"labels": {**spec_obj.labels, "kind": "nightly"}})


def _run_name() -> str:
    return run_name("nightly · ", default_spec=DEFAULT_SPEC)


@flow(name="campaign", flow_run_name=_run_name, validate_parameters=True)
def nightly(spec: Union[CampaignSpec, str] = DEFAULT_SPEC, campaign_id: str | None = None,
            baseline_campaign_id: str | None = None) -> dict[str, Any]:
    """Runs the nightly campaign and checks it for regressions against its baseline.

    Args:
        spec: the nightly campaign spec, or its path (relative to the benchflow checkout).
        campaign_id: resume this nightly campaign (completed cells are skipped); a new id when empty.
        baseline_campaign_id: compare with this campaign instead of the pinned or previous nightly.
    """
    logger = get_run_logger()
    spec_obj = nightly_spec(spec)
    cid = validate_campaign_id(campaign_id) if campaign_id else new_campaign_id(spec_obj.name)
    state = campaign(spec=spec_obj, campaign_id=cid, return_state=True)
    results = open_results()
    current = results.store.get_campaign(cid)
    if current is None:
        return failed(f"nightly {cid}: the campaign did not start: {state.message}", {"campaign_id": cid})
    if state.is_cancelled():
        return cancelled(f"nightly {cid}: {state.message}", {"campaign_id": cid, "status": current["status"]})
    settings = regression.regression_settings(spec_obj)
    baseline = regression.find_baseline(results.store, spec_obj.name, cid, policy=settings["policy"],
                                        explicit_id=baseline_campaign_id, before=current["created_at"])
    problems = [f"campaign {cid} failed: {state.message}"] if state.is_failed() else []
    summary: dict[str, Any] = {"campaign_id": cid, "status": current["status"], "baseline_campaign_id": None,
                               "regressions": 0, "improvements": 0}
    if baseline is None:
        note = (f"No baseline yet for {spec_obj.name}: no pinned campaign and no earlier completed nightly. "
                f"This run ({cid}) is the baseline of the next one if it completes.")
        logger.warning("%s", note)
        publish_regressions(spec_obj.name, None, note)
    else:
        report = _check(results, spec_obj, cid, baseline["id"], settings)
        summary.update(baseline_campaign_id=baseline["id"], regressions=len(report.regressions),
                       improvements=len(report.improvements))
        if report.regressions:
            problems.append(report.message())
            emit_regression_event(spec_obj.name, report)
    if problems:
        message = "nightly: " + "; ".join(problems)
        logger.error("%s", message)
        return failed(message, summary)
    return summary


def _check(results: Results, spec: CampaignSpec, cid: str, baseline_id: str,
           settings: dict[str, Any]) -> regression.RegressionReport:
    logger = get_run_logger()
    store = results.store
    base_rows = analysis_input(store.cell_records(baseline_id), store.summary_records(baseline_id))
    rows = analysis_input(store.cell_records(cid), store.summary_records(cid))
    report = check_regressions(base_rows, rows, settings["metrics"], settings["tolerance"], settings["tolerances"],
                               spec.workload.seed, cid, baseline_id)
    persist_regressions(results, cid, report)
    publish_regressions(spec.name, report)
    logger.info("%s", report.message())
    return report
