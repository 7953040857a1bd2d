"""kill -9 in the middle of a study, then the same command again with the same study id."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from benchflow.cli import main
from tests.tuning.test_cli import SPEC, home  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SLOW = {**SPEC, "search_space": {"max-num-seqs": {"type": "int", "low": 2, "high": 16}},
        "workload": {**SPEC["workload"], "max_requests": 24, "dataset": "D(64,32)"},
        "sampler": {"name": "random", "seed": 5}, "trials": {"count": 3}}


def _wait(cond, timeout_s=180.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def _states(storage):
    """Trial states read with sqlite3 (opening an Optuna storage would race the tuner creating it)."""
    path = storage.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return []
    try:
        with sqlite3.connect(path) as db:
            return [TrialState[s] for (s,) in db.execute("select state from trials order by number")]
    except sqlite3.OperationalError:  # tables not created yet, or locked
        return []


def _sim_pids(cid):
    """Pids of the simulators registered for campaign ``cid`` (the launcher's process registry)."""
    import json
    from pathlib import Path

    home_dir = Path(os.environ["BENCHFLOW_HOME"])
    return [json.loads(p.read_text())["pid"] for p in (home_dir / "runs" / cid / "processes").glob("*.json")]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _cells(home_dir):
    with sqlite3.connect(home_dir / "benchflow.db") as db:
        return sorted(db.execute("select campaign_id, cell_id, started_at from cells").fetchall())


def test_kill_9_then_resume_measures_only_what_is_missing(home, tmp_path):  # noqa: F811
    spec = tmp_path / "tune.yaml"
    spec.write_text(yaml.safe_dump(SLOW))
    storage = f"sqlite:///{home / 'benchflow-optuna.db'}"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "benchflow", "tune", str(spec), "--study-id", "k9"],
                            env={**os.environ}, start_new_session=True, stdout=log, stderr=log)

    def one_done_one_running():
        states = _states(storage)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        return states[:2] == [TrialState.COMPLETE, TrialState.RUNNING] and _sim_pids("k9-t1")

    try:
        _wait(one_done_one_running)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the tuner and its simulator, mid-trial
        proc.wait(30)
    before = _cells(home)
    measured_before = [c for c in before if c[0] == "k9-t0"]
    assert len(measured_before) == 1

    left = _sim_pids("k9-t1")
    assert left, "kill -9 of the tuner leaves its simulator running (its own process group)"
    try:
        assert main(["tune", str(spec), "--study-id", "k9"]) == 0
        assert not any(_alive(p) for p in left), "the resumed study stops the leftover backend"
    finally:
        for pid in left:  # whatever happened above, no simulator outlives the test
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    study = optuna.load_study(study_name="k9", storage=storage)
    interrupted = study.trials[1]
    assert interrupted.state == TrialState.FAIL and "interrupted" in interrupted.user_attrs["failed_reason"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == interrupted.params and retry[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3
    after = _cells(home)
    assert [c for c in after if c[0] == "k9-t0"] == measured_before, "the completed trial is not measured again"
    per_campaign = {}
    for cid, _, _ in after:
        per_campaign[cid] = per_campaign.get(cid, 0) + 1
    assert all(n == 1 for cid, n in per_campaign.items() if cid != "k9-t1"), per_campaign
