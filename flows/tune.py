"""The ``tune`` flow: a tuning spec in; an Optuna study in the results database and its report out.

Wiring only: :func:`benchflow.tuning.study.run_study` holds the behaviour; each trial is a
one-backend campaign run by the campaign engine through the same Prefect tasks as a campaign
(:func:`flows.backend_cells.backend_steps`: GPU slots, health gate, deploy, cells, teardown).
Artifacts: trial progress (k of N, best so far), the trials table and the markdown report.
"""

from __future__ import annotations

from typing import Any, Union

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, \
    update_progress_artifact
from prefect.runtime import flow_run as current_run

from benchflow.tuning import report
from benchflow.tuning.confirm import confirm_study
from benchflow.tuning.local import reap_study_leftovers
from benchflow.tuning.spec import TuningSpec, load_tuning_spec
from benchflow.tuning.study import new_study_id, prepare_storage, run_study
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


@flow(name="tune", validate_parameters=True, on_crashed=[reap_on_exit], on_cancellation=[reap_on_exit])
def tune(spec: Union[TuningSpec, str], study_id: str | None = None) -> dict[str, Any]:
    """Tunes a backend's engine flags.

    Args:
        spec: the tuning spec itself, or the path of a YAML/JSON tuning spec file.
        study_id: resume this study (completed trials are not measured again); a new id when empty.
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

    def steps_for(cspec: Any, cid: str) -> Any:
        return backend_steps(results, cspec, cid, workdir / cid, None, lambda: None)

    def on_campaign(cid: str, cspec: Any, status: str) -> None:
        if status == "running":
            persist_campaign(results, cid, cspec, status="running", flow_run_id=str(current_run.id or ""))
        else:
            results.finish_campaign(cid, status)

    def progress(note: str) -> None:
        finished[0] += 1
        logger.info("%s", note)
        update_progress_artifact(progress_id, progress=100.0 * finished[0] / total if total else 0.0,
                                 description=note[:500])

    logger.info("study %s: trials stored as campaigns %s-t<N>; study storage %s", sid, sid,
                results.describe())
    out = run_study(tspec, storage, steps_for, study_id=sid, on_campaign=on_campaign, progress=progress)
    study = report.load(storage, sid)
    if tspec.confirm:
        confirm_study(study, tspec, steps_for, on_campaign=on_campaign)
    create_table_artifact(key=artifact_key("tune", sid, "trials"), table=trials_table(study),
                          description=f"trials of study {sid}")
    markdown = report.markdown(study, charts=report.study_charts(study, results))  # also studies/<id>/charts/
    create_markdown_artifact(key=artifact_key("tune", sid, "report"), markdown=markdown,
                             description=f"report of study {sid}")
    return {"study_id": sid, "ran": out.ran, "finished": out.finished, "stopped_by": out.stopped_by}
