"""The ``tune`` flow: a tuning spec in; an Optuna study in the results database and its report out.

Wiring only: :func:`benchflow.tuning.study.run_study` holds the behaviour; each trial is a
one-backend campaign run by the campaign engine through the same Prefect tasks as a campaign
(:func:`flows.backend_cells.backend_steps`: GPU slots, health gate, deploy, cells, teardown).
Artifacts: trial progress (k of N, best so far), the trials table and the markdown report.

``parallel: N`` runs N trials at once (:mod:`benchflow.tuning.parallel`): with ``placement: local``
as threads of this flow run, each on its own GPU lane; with ``placement: pool`` as runs of the
``tune-trial`` deployment (:func:`tune_trial`, one trial each) on the GPU work pool, submitted with
``run_deployment``, at most N in flight, all sharing the study in Postgres.
"""

from __future__ import annotations

import contextvars
from typing import Any, Union

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, \
    update_progress_artifact
from prefect.runtime import flow_run as current_run

from benchflow.engine.liveness import die_with_parent
from benchflow.tuning import report
from benchflow.tuning.confirm import confirm_study
from benchflow.tuning.local import reap_study_leftovers
from benchflow.tuning.parallel import dispatch, heartbeat_storage, run_one_trial, run_tuning
from benchflow.tuning.spec import TuningSpec, load_tuning_spec
from benchflow.tuning.study import StudyOutcome, new_study_id, open_study, prepare_storage
from flows.backend_cells import backend_steps
from flows.hooks import reap_on_exit
from tasks.artifacts import artifact_key
from tasks.persist import open_results, persist_campaign


def trials_table(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": "infeasible" if t.user_attrs.get("infeasible") else t.state.name,
                     **{k: v for k, v in t.params.items()},
                     "values": t.values if t.user_attrs.get("measured") else None,
                     "note": (t.user_attrs.get("infeasible") or "").split("\n")[0]})
    return rows


TRIAL_DEPLOYMENT = "tune-trial/trial"


def _trial_hooks(results: Any, workdir: Any) -> tuple[Any, Any]:
    def steps_for(cspec: Any, cid: str) -> Any:
        return backend_steps(results, cspec, cid, workdir / cid, None, lambda: None)

    def on_campaign(cid: str, cspec: Any, status: str) -> None:
        if status == "running":
            persist_campaign(results, cid, cspec, status="running", flow_run_id=str(current_run.id or ""))
        else:
            results.finish_campaign(cid, status)

    return steps_for, on_campaign


@flow(name="tune-trial", validate_parameters=True, on_crashed=[reap_on_exit], on_cancellation=[reap_on_exit])
def tune_trial(spec: Union[TuningSpec, str], study_id: str, lane: int = 0) -> dict[str, Any]:
    """Runs ONE trial of a tuning study (started by the tune flow with ``placement: pool``).

    Args:
        spec: the study's tuning spec (a mapping or the path of a spec file).
        study_id: the study, in the results database's Optuna storage.
        lane: the GPU lane of this trial (0..parallel-1): which of the host's GPUs it uses.
    """
    die_with_parent()  # a SIGKILLed worker takes this trial (its backend, its heartbeat) with it
    tspec = spec if isinstance(spec, TuningSpec) else load_tuning_spec(spec)
    results = open_results()
    storage = heartbeat_storage(prepare_storage(results.config.database_url))
    steps_for, on_campaign = _trial_hooks(results, results.config.home / "runs")
    out = run_one_trial(tspec, storage, study_id, steps_for, lane=lane, on_campaign=on_campaign)
    get_run_logger().info("study %s: trial %d on lane %d: %s", study_id, out["trial"], lane,
                          out["infeasible"].split("\n")[0] if out["infeasible"] else out["values"])
    return out


def _run_on_pool(tspec: TuningSpec, storage_url: str, sid: str, deployment: str,
                 job_variables: dict[str, Any] | None, progress: Any) -> StudyOutcome:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    study = open_study(tspec, heartbeat_storage(storage_url), sid)
    params = {"spec": tspec.model_dump(mode="json", exclude_none=True), "study_id": sid}

    def start(lane: int) -> Any:
        run = run_deployment(deployment, parameters={**params, "lane": lane}, timeout=0,
                             job_variables=job_variables, flow_run_name=f"{sid} · lane {lane}")
        get_run_logger().info("study %s: trial run %s started on lane %d", sid, run.name, lane)
        return run.id

    def done(run_id: Any) -> bool:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        return bool(state and state.is_final())

    def on_done(run_id: Any) -> None:
        finished = len([t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"])
        progress(f"trial run {run_id} ended; {finished} trials finished")

    out = dispatch(study, tspec, start, done, progress=on_done, poll_s=2.0)
    finished = len([t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"])
    return StudyOutcome(sid, out.ran, finished, out.stopped_by)


@flow(name="tune", validate_parameters=True, on_crashed=[reap_on_exit], on_cancellation=[reap_on_exit])
def tune(spec: Union[TuningSpec, str], study_id: str | None = None, trial_deployment: str = TRIAL_DEPLOYMENT,
         trial_job_variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tunes a backend's engine flags.

    Args:
        spec: the tuning spec itself, or the path of a YAML/JSON tuning spec file.
        study_id: resume this study (completed trials are not measured again); a new id when empty.
        trial_deployment: with ``placement: pool``, the deployment each trial runs as.
        trial_job_variables: with ``placement: pool``, job variables of the trial runs (e.g. env).
    """
    logger = get_run_logger()
    tspec = spec if isinstance(spec, TuningSpec) else load_tuning_spec(spec)
    sid = study_id or new_study_id(tspec)
    results = open_results()
    storage = prepare_storage(results.config.database_url)
    workdir = results.config.home / "runs"  # reap_on_exit looks for trial backends there
    reap_study_leftovers(workdir, sid)
    total = tspec.trials.count or 0
    progress_id = create_progress_artifact(progress=0.0, key=artifact_key("tune", sid, "progress"),
                                           description=f"trials of study {sid}")
    finished = [0]

    steps_for, on_campaign = _trial_hooks(results, workdir)

    def progress(note: str) -> None:
        finished[0] += 1
        logger.info("%s", note)
        update_progress_artifact(progress_id, progress=100.0 * finished[0] / total if total else 0.0,
                                 description=note[:500])

    logger.info("study %s: trials stored as campaigns %s-t<N>; study storage %s", sid, sid,
                results.describe())
    if tspec.placement == "pool":
        out = _run_on_pool(tspec, storage, sid, trial_deployment, trial_job_variables, progress)
    else:
        out = run_tuning(tspec, storage, steps_for, study_id=sid, on_campaign=on_campaign, progress=progress,
                         thread_context=lambda: contextvars.copy_context().run)
    study = report.load(storage, sid)
    if tspec.confirm:
        confirm_study(study, tspec, steps_for, on_campaign=on_campaign)
    create_table_artifact(key=artifact_key("tune", sid, "trials"), table=trials_table(study),
                          description=f"trials of study {sid}")
    markdown = report.markdown(study, charts=report.study_charts(study, results))  # also studies/<id>/charts/
    create_markdown_artifact(key=artifact_key("tune", sid, "report"), markdown=markdown,
                             description=f"report of study {sid}")
    return {"study_id": sid, "ran": out.ran, "finished": out.finished, "stopped_by": out.stopped_by}
