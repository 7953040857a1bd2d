"""A worker SIGKILLed in the middle of a tuning trial (``placement: pool``), on a real Prefect server
on Postgres with two process workers on a pool of their own: the trial's flow-run process notices
that its worker is gone and stops itself (so its Optuna heartbeat stops too), Optuna's heartbeat
marks the trial FAIL after the grace period, ``RetryHeartbeatStaleTrialCallback`` enqueues its
configuration again, the other worker measures it, the study still finishes its count of trials,
and nothing of the killed worker's tree is left."""

from __future__ import annotations

import os
import signal
import uuid

import psutil
import pytest

from benchflow.tuning.study import storage_url
from tests.deploy.conftest import wait_final
from tests.deploy.stack import descendants, pool_with_backend_deployment, start_worker, wait_tree_gone
from tests.deploy.test_prefect_server import create_run
from tests.support import wait_for

pytestmark = pytest.mark.integration

TRIALS = 3
#: One trial: a sim backend, then 48 requests of 64 output tokens at c4: long enough to be killed in.
SPEC = {"name": "kill-tune", "model": {"name": "sim-model"}, "allow_simulated": True,
        "backend": {"name": "sim", "kind": "sim", "ready_timeout_s": "60s", "stop_grace_s": 2},
        "search_space": {"max-num-seqs": {"type": "categorical", "choices": [2, 4, 6, 8]}},
        "workload": {"dataset": "D(32,64)", "seed": 3, "load_points": [{"concurrency": 4}], "max_requests": 48,
                     "warmup_requests": 1, "request_timeout_s": "30s", "max_duration_s": "90s"},
        "objective": {"load_point": "c4", "metrics": {"output_throughput": "maximize"}},
        "sampler": {"name": "random", "seed": 5}, "trials": {"count": TRIALS},
        "parallel": 1, "placement": "pool"}
#: The trial runs' Optuna heartbeat: every 3 s, stale after 30 s (defaults 30 s / 120 s). A grace much
#: shorter than that fails healthy trials too when a loaded machine starves a trial's process for seconds.
HEARTBEAT = {"BENCHFLOW_TUNE_HEARTBEAT_S": "3", "BENCHFLOW_TUNE_GRACE_S": "30"}


def _measuring(pid: int) -> bool:
    """The worker's tree holds a flow-run process and the simulator it deployed."""
    def is_sim(p: psutil.Process) -> bool:
        try:
            return any("benchflow.sim" in part or part == "sim" for part in p.cmdline())
        except psutil.Error:
            return False
    return any(is_sim(p) for p in descendants(pid))


def test_a_sigkilled_worker_s_trial_is_failed_by_the_heartbeat_and_retried_on_the_other(prefect_stack):
    import optuna
    from optuna.trial import TrialState

    pool = f"bf-tkill-{uuid.uuid4().hex[:6]}"
    sid = f"tkill{uuid.uuid4().hex[:6]}"
    with prefect_stack.client() as client:
        deployment = pool_with_backend_deployment(client, pool, f"tkill-{pool}", source="tune-trial/trial")
        workers = [start_worker(prefect_stack, pool, f"{pool}-a", **HEARTBEAT),
                   start_worker(prefect_stack, pool, f"{pool}-b", **HEARTBEAT)]
        try:
            diag = lambda: prefect_stack.logs()[-4000:] + "".join(w.tail(3000) for w in workers)  # noqa: E731

            def running_trial():
                study = optuna.load_study(study_name=sid, storage=storage)
                return next(iter(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))), None)

            run = create_run(client, "tune/adhoc", {"spec": SPEC, "study_id": sid, "trial_deployment": deployment})
            # the parent creates the study (and Optuna's schema) before it starts its first trial run
            wait_for(lambda: client.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {
                "operator": "and_", "any_": [run["id"]]}}}).json(), 300, 0.5, what="a first trial run", detail=diag)
            # one storage (one connection pool) for every poll, made once the schema exists:
            # optuna.load_study(storage=<url>) builds an engine each time, whose pooled connection stays
            # open until it is garbage-collected (a loaded run hit Postgres's "too many clients")
            storage = optuna.storages.RDBStorage(storage_url(prefect_stack.results_url))
            killed = wait_for(running_trial, 300, 0.5, what="a running trial", detail=diag)
            victim = wait_for(lambda: next((w for w in workers if _measuring(w.popen.pid)), None), 120, 0.5,
                              what="the worker measuring the trial", detail=diag)
            survivor = next(w for w in workers if w is not victim)
            tree = descendants(victim.popen.pid)
            assert running_trial() is not None and running_trial().number == killed.number, \
                "the trial ended before the kill: make its cells longer"
            os.kill(victim.popen.pid, signal.SIGKILL)  # the worker only, not its process group
            victim.popen.wait(10)

            final = wait_final(client, run["id"], timeout_s=480)
            assert final["state"]["type"] == "COMPLETED", (final["state"], diag())
        finally:
            for w in workers:
                w.stop()

    study = optuna.load_study(study_name=sid, storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)), f"a trial number repeats: {numbers}"
    by_number = {t.number: t for t in study.trials}
    assert by_number[killed.number].state == TrialState.FAIL, [(t.number, t.state) for t in study.trials]
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == TRIALS, [(t.number, t.state, t.system_attrs) for t in study.trials]
    retried = [t for t in done if t.system_attrs.get("failed_trial") == killed.number]
    killed = by_number[killed.number]  # as stored now (its parameters may not have been set when it was seen)
    assert len(retried) == 1 and killed.params and retried[0].params == killed.params, \
        [(t.number, t.params, t.system_attrs) for t in study.trials]
    assert f"study {sid}: trial {retried[0].number} on lane" in survivor.log.read_text(errors="replace"), \
        "the other worker measured the retried configuration"

    assert tree, "the killed worker had a flow-run process"
    wait_tree_gone(tree)
    print(f"\ntrial {killed.number} killed with its worker: FAIL; retried as trial {retried[0].number} on the "
          f"other worker; {len(tree)} processes of the killed worker's tree gone")
