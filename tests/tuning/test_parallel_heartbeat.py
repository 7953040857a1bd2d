"""A worker that dies mid-trial: Optuna's heartbeat marks its trial FAIL, and the trial is retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchflow.tuning.parallel import heartbeat_storage, run_one_trial
from benchflow.tuning.study import _fail_stale
from tests.tuning.fakes import TuneFakes
from tests.tuning.test_study import spec

REPO = Path(__file__).resolve().parents[2]

RUNNER = textwrap.dedent("""
    import sys, time
    from benchflow.tuning.parallel import heartbeat_storage, run_one_trial
    from tests.tuning.fakes import TuneFakes
    from tests.tuning.test_study import spec

    url, marker = sys.argv[1], sys.argv[2]
    fakes = TuneFakes()

    def steps_for(cspec, cid):
        steps = fakes.steps_for(cspec, cid)

        def hang(*args):
            open(marker, "w").write(cid)
            time.sleep(600)

        steps.run_cell = hang
        return steps

    run_one_trial(spec(parallel=2), heartbeat_storage(url, heartbeat_s=1, grace_s=3), "hb", steps_for,
                  device_count=0)
""")


def _wait(cond, timeout_s=90.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{what}: not reached in {timeout_s}s")


def test_a_sigkilled_trial_runner_is_marked_failed_by_the_heartbeat_and_its_trial_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    marker = tmp_path / "measuring"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, url, str(marker)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: marker.exists() or proc.poll() is not None, what="the runner measuring its trial")
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    storage = heartbeat_storage(url, heartbeat_s=1, grace_s=3)
    study = optuna.load_study(study_name="hb", storage=storage)
    (dead,) = study.get_trials()
    assert dead.state == TrialState.RUNNING, "nobody has noticed yet: the trial is still RUNNING"

    def stale_failed():
        _fail_stale(study)  # what every trial start, and the dispatcher's every poll, does
        return study.trials[0].state == TrialState.FAIL

    _wait(stale_failed, what="the heartbeat marking the trial FAIL")
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == dead.params, "its configuration is enqueued again"

    fakes = TuneFakes()  # another worker takes the retry
    out = run_one_trial(spec(parallel=2), storage, "hb", fakes.steps_for, device_count=0)
    retry = study.trials[out["trial"]]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params and out["measured"]
    assert retry.system_attrs["failed_trial"] == dead.number
    assert fakes.deploys == [dead.user_attrs["flags"]]
    assert sorted(t.number for t in study.trials) == [0, 1]
