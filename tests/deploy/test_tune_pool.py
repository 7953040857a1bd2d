"""Distributed tuning on a real Prefect server on Postgres: a ``tune/adhoc`` run with ``parallel: 2``
and ``placement: pool`` starts its trials as ``tune-trial/trial`` runs on the GPU work pool, served
by two process workers, each trial holding its own GPU slot (two slots; fake NVML devices), all
sharing the Optuna study in the results database (Postgres, schema ``optuna``)."""

from __future__ import annotations

import pytest

from benchflow.tuning.study import storage_url
from tests.deploy.conftest import wait_final
from tests.deploy.stack import BIN, POOL, start
from tests.deploy.test_prefect_server import create_run

pytestmark = pytest.mark.integration

HOST = "tunepool"
TRIALS = 4
SPEC = {"name": "pool-tune", "model": {"name": "sim-model"}, "allow_simulated": True,
        "backend": {"name": "sim", "kind": "sim", "ready_timeout_s": "60s", "stop_grace_s": 2, "gpu_slots": [0],
                    "engine_args": {"time-scale": 0.25}},
        "search_space": {"max-num-seqs": {"type": "categorical", "choices": [2, 4, 6, 8]}},
        "workload": {"dataset": "D(32,16)", "seed": 3, "load_points": [{"concurrency": 4}], "max_requests": 8,
                     "warmup_requests": 1, "request_timeout_s": "20s", "max_duration_s": "60s"},
        "objective": {"load_point": "c4", "metrics": {"output_throughput": "maximize"}},
        "sampler": {"name": "random", "seed": 2}, "trials": {"count": TRIALS},
        "parallel": 2, "placement": "pool"}
#: The runs' environment: this host's name in the slot names, two fake GPUs, strict slots.
RUN_ENV = {"BENCHFLOW_GPU_HOST": HOST, "BENCHFLOW_FAKE_NVML": "healthy-2gpu", "BENCHFLOW_GPU_SLOTS": "strict"}


@pytest.fixture
def second_worker(prefect_stack):
    """A second process worker on the GPU pool (the session's stack has one)."""
    workdir = prefect_stack.tmp / "worker2-cwd"
    workdir.mkdir(exist_ok=True)
    env = prefect_stack.env(BENCHFLOW_HOME=str(prefect_stack.tmp / "benchflow-home-2"),
                            PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5")
    proc = start("worker-2", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                              "--name", "test-worker-2"], env, workdir, prefect_stack.tmp)
    try:
        yield proc
    finally:
        proc.stop()


def _gpu_slots(client, names: list[str]) -> None:
    """What `benchflow infra bootstrap --gpus 2` creates for this host: one limit-1 slot per GPU."""
    for name in names:
        if client.get(f"/v2/concurrency_limits/{name}").status_code == 404:
            response = client.post("/v2/concurrency_limits/", json={"name": name, "limit": 1, "active": True})
            assert response.status_code in (200, 201), response.text


def test_two_pool_workers_run_trials_in_parallel_on_two_gpu_slots(prefect_stack, second_worker):
    import optuna
    from optuna.trial import TrialState

    slots = [f"gpu-{HOST}-0", f"gpu-{HOST}-1"]
    with prefect_stack.client() as client:
        _gpu_slots(client, slots)
        run = create_run(client, "tune/adhoc", {"spec": SPEC, "study_id": "pooltune",
                                                "trial_job_variables": {"env": RUN_ENV}},
                         job_variables={"env": RUN_ENV})
        final = wait_final(client, run["id"], timeout_s=420)
        assert final["state"]["type"] == "COMPLETED", (final["state"], prefect_stack.logs(), second_worker.tail())
        children = client.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {
            "operator": "and_", "any_": [run["id"]]}}}).json()
        trial_runs = [r for r in children if r["name"].startswith("pooltune")]
        for limit in slots:
            got = client.get(f"/v2/concurrency_limits/{limit}").json()
            assert got["active_slots"] == 0, f"{limit} still held after the study: {got}"
    assert len(trial_runs) >= TRIALS, [r["name"] for r in children]
    assert all(r["state"]["type"] == "COMPLETED" for r in trial_runs), [r["state"] for r in trial_runs]

    study = optuna.load_study(study_name="pooltune", storage=storage_url(prefect_stack.results_url))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)), f"a trial number repeats: {numbers}"
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == TRIALS and all(t.user_attrs["measured"] for t in done), [t.user_attrs for t in done]

    held = [t.user_attrs["gpu_slots"] for t in done]  # the slot records, written when each was released
    assert {h["slots"][0] for h in held} == set(slots) and all(len(h["slots"]) == 1 for h in held)
    for i, a in enumerate(held):
        for b in held[i + 1:]:
            if a["slots"] == b["slots"]:
                assert a["released"] <= b["acquired"] or b["released"] <= a["acquired"], f"held twice: {a} {b}"
    spans = [(t.datetime_start, t.datetime_complete) for t in done]
    overlapping = [(x, y) for i, x in enumerate(spans) for y in spans[i + 1:] if x[0] < y[1] and y[0] < x[1]]
    assert overlapping, f"no two trials ran at the same time: {spans}"
