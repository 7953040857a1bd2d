"""Deploy and tear down a serving backend. Launchers are live objects: never cached or persisted."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from benchflow.errors import BackendStartError
from benchflow.launch import Launcher, make_local_launcher, tail
from benchflow.spec_backends import BackendSpec
from tasks.policy import retry_if_transient


def _transient(err: BackendStartError) -> BackendStartError:
    """A port taken by someone else between our check and the bind is worth one more try."""
    if "address already in use" in (err.log_tail or "").lower():
        err.transient = True
    return err


@task(name="deploy-backend", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient,
      cache_policy=NO_CACHE, persist_result=False)
def deploy_backend(backend: BackendSpec, model: str, campaign_id: str, log_dir: Path, registry_dir: Path) -> Launcher:
    logger = get_run_logger()
    if backend.launcher == "docker":
        from tasks.docker import deploy_container

        return deploy_container(backend, model, campaign_id, log_dir)
    launcher = make_local_launcher(backend, model, Path(log_dir) / f"backend-{backend.name}.log",
                                   registry_dir=registry_dir, owner=campaign_id, run_id=str(flow_run.id or ""))
    url = launcher.start()
    logger.info("backend %s starting at %s", backend.name, url)
    try:
        launcher.ready(backend.ready_timeout_s)
    except BackendStartError as e:
        logger.error("backend %s failed to start: %s\n--- log tail ---\n%s", backend.name,
                     str(e).split("\n", 1)[0], e.log_tail or tail(launcher.logs()))
        launcher.stop(getattr(backend, "stop_grace_s", 10.0))
        raise _transient(e)
    return launcher


@task(name="teardown-backend", cache_policy=NO_CACHE, persist_result=False)
def teardown_backend(launcher: Launcher, grace_s: float = 10.0) -> str:
    """Stops the backend (SIGTERM, grace, SIGKILL) and returns its whole log."""
    logger = get_run_logger()
    launcher.stop(grace_s)
    logs = launcher.logs()
    logger.info("backend at %s torn down (%d bytes of log)", launcher.url, len(logs))
    return logs
