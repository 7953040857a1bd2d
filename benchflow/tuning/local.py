"""Plain (Prefect-free) steps for tuning trials run by ``benchflow tune``: local launchers (process
and endpoint backends), the runner, and the results store. ``flows/tune.py`` uses Prefect tasks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from benchflow.engine import BackendSteps
from benchflow.errors import BackendStartError

log = logging.getLogger(__name__)


def local_steps(results: Any, workdir: Path) -> Any:
    """``steps_for(campaign_spec, campaign_id) -> BackendSteps`` for :func:`benchflow.tuning.study.run_study`.
    ``workdir``: the runs folder (``$BENCHFLOW_HOME/runs``); a trial's logs and process registry go
    to ``<workdir>/<campaign id>``, as a campaign's do."""

    def steps_for(cspec: Any, cid: str) -> BackendSteps:
        from benchflow.launch import make_local_launcher
        from benchflow.runner import measure_cell_sync

        folder = Path(workdir) / cid

        def deploy(backend: Any) -> Any:
            if backend.launcher == "docker":
                raise BackendStartError(f"backend {backend.name}: docker backends are tuned through the Prefect "
                                        "flow (flows/tune.py), not `benchflow tune`")
            launcher = make_local_launcher(backend, cspec.model.name, folder / "logs" / f"backend-{backend.name}.log",
                                           registry_dir=folder / "processes", owner=cid)
            launcher.start()
            try:
                launcher.ready(backend.ready_timeout_s)
            except BackendStartError:
                launcher.stop(getattr(backend, "stop_grace_s", 10.0))
                raise
            return launcher

        def teardown(launcher: Any, grace_s: float) -> str:
            launcher.stop(grace_s)
            return launcher.logs()

        def run_cell(backend: Any, cell: Any, launcher: Any, should_stop: Any) -> Any:
            return measure_cell_sync(cspec, cell, launcher.url, alive=launcher.alive)

        return BackendSteps(
            deploy=deploy, teardown=teardown, run_cell=run_cell,
            persist_cell=lambda c, row, summary, artifacts: results.persist_cell(cid, row, summary, artifacts),
            persist_backend_log=lambda name, text: results.persist_backend_log(cid, name, text.encode()),
            persist_artifact=lambda name, data: results.persist_artifact(cid, name, data),
        )

    return steps_for


def campaign_hook(results: Any, study_id: str) -> Any:
    """Stores each trial as a campaign (kind ``tuning-trial``, label ``study``) and its end status."""

    def on_campaign(cid: str, cspec: Any, status: str) -> None:
        if status == "running":
            results.persist_campaign(cid, cspec, status="running", kind="tuning-trial",
                                     labels={"kind": "tuning-trial", "study": study_id})
        else:
            results.finish_campaign(cid, status)

    return on_campaign


def reap_study_leftovers(runs_dir: Path, study_id: str) -> list[dict]:
    """Stops backend processes that an earlier, killed run of this study left running (found in
    its trials' process registries)."""
    from benchflow.launch import reap_leftovers

    stopped: list[dict] = []
    for registry in sorted(Path(runs_dir).glob(f"{study_id}-[tc]*/processes")):
        for info in reap_leftovers(registry, owner=registry.parent.name):
            log.warning("stopped leftover backend %s (pid %s) of an earlier run of study %s", info.get("backend"),
                        info.get("pid"), study_id)
            stopped.append(info)
    return stopped
