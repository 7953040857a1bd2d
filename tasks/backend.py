"""Deploy and tear down a serving backend. Launchers are live objects: never cached or persisted.

The launchers are the library's (:func:`benchflow.launch.make_launcher`); these tasks add the
Prefect policy only: retries on transient start failures, the run's logger, the flow run id as
the launcher's ``run_id``, and the ``HF_TOKEN`` Secret block for containers.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from benchflow.errors import BackendStartError
from benchflow.launch import Launcher, make_launcher, tail
from benchflow.spec import BackendSpec
from tasks.docker import secret_env
from tasks.policy import retry_if_transient


def _transient(err: BackendStartError) -> BackendStartError:
    """A port taken by someone else between our check and the bind is worth one more try."""
    if "address already in use" in (err.log_tail or "").lower():
        err.transient = True
    return err


def _teardown_run_name() -> str:
    from prefect.runtime import task_run

    backend = getattr(task_run.parameters.get("launcher"), "backend", None)
    return f"teardown-{getattr(backend, 'name', None) or 'backend'}"


@task(name="deploy-backend", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient,
      cache_policy=NO_CACHE, persist_result=False, task_run_name="deploy-{backend.name}")
def deploy_backend(backend: BackendSpec, model: str, campaign_id: str, log_dir: Path, registry_dir: Path) -> Launcher:
    """Starts ``backend`` and waits until it is ready; returns its launcher. On any failure (or a
    cancellation) while it starts, the backend is stopped before the error propagates."""
    logger = get_run_logger()
    grace_s = float(getattr(backend, "stop_grace_s", 10.0))
    launcher = make_launcher(backend, model, log_path=Path(log_dir) / f"backend-{backend.name}.log",
                             registry_dir=Path(registry_dir), owner=campaign_id, run_id=str(flow_run.id or ""),
                             env_extra=secret_env(backend), logger=logger)
    try:
        launcher.start()
        launcher.ready(float(backend.ready_timeout_s))
    except BackendStartError as e:
        logger.error("backend %s failed to start: %s\n--- log tail ---\n%s", backend.name,
                     str(e).split("\n", 1)[0], e.log_tail or tail(launcher.logs()))
        launcher.stop(grace_s)
        raise _transient(e)
    except BaseException:
        launcher.stop(grace_s)  # cancelled or crashed while starting: leave nothing behind
        raise
    return launcher


@task(name="teardown-backend", cache_policy=NO_CACHE, persist_result=False, task_run_name=_teardown_run_name)
def teardown_backend(launcher: Launcher, grace_s: float = 10.0) -> str:
    """Stops the backend (SIGTERM, grace, SIGKILL) and returns its whole log."""
    logger = get_run_logger()
    if hasattr(launcher, "log"):
        launcher.log = logger  # the launcher's own messages go to this task run, as its deploy's did
    launcher.stop(grace_s)
    logs = launcher.logs()
    logger.info("backend at %s torn down (%d bytes of log)", launcher.url, len(logs))
    return logs
