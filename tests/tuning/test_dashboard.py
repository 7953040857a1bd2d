"""`optuna-dashboard <storage-url>` opens a study that benchflow made (issue 14, Outputs).

The study is made by benchflow's study loop (:func:`benchflow.tuning.study.run_study`) on the
storage URL that `benchflow tune` uses and prints (``benchflow-optuna.db`` beside the results
database; schema ``optuna`` on Postgres), its trials measured by the virtual-time simulator. The
real `optuna-dashboard` command is started on a free loopback port and the study is read back
through its HTTP API (``/api/studies``, ``/api/studies/<id>``).

Known limit, pinned here so a change shows: optuna-dashboard 0.21 reads Optuna's old list of
constraint values, not Optuna 5's named constraints, so its "best trial" ignores the SLO. The
study's user attrs ``infeasible`` and ``measured`` (shown as user-attr columns in the dashboard)
say which trials broke it, and `benchflow tune report` names the best feasible one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest

from benchflow.charts import tuning as tc
from tests.charts.test_tuning_charts import virtual_fakes, virtual_spec
from tests.store.conftest import pg_server, pg_url  # noqa: F401 - fixtures
from tests.support.helpers import wait_for

pytestmark = pytest.mark.integration
optuna.logging.set_verbosity(optuna.logging.WARNING)
TRIALS = 10


def _dashboard() -> str:
    found = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("optuna-dashboard is not installed (pip install -e '.[dev]'); CI must run this test")
    pytest.skip("optuna-dashboard is not installed (pip install optuna-dashboard)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def _make_study(database_url: str, study_id: str) -> tuple[str, optuna.Study]:
    from benchflow.tuning.study import prepare_storage, run_study

    storage = prepare_storage(database_url)
    run_study(virtual_spec(trials={"count": TRIALS}), storage, virtual_fakes().steps_for, study_id=study_id)
    return storage, optuna.load_study(study_name=study_id, storage=storage)


def _read_through_the_dashboard(storage: str, study: optuna.Study, tmp_path: Path) -> dict:
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen([_dashboard(), storage, "--host", "127.0.0.1", "--port", str(port),
                             "--server", "wsgiref"], stdout=log, stderr=subprocess.STDOUT)
    try:
        listed = wait_for(lambda: _get(port, "/api/studies"), 120, 0.3, what="optuna-dashboard to answer",
                          ignore=(OSError,), proc=proc,
                          detail=lambda: (tmp_path / "dashboard.log").read_text()[-2000:])
        mine = [s for s in listed["study_summaries"] if s["study_name"] == study.study_name]
        assert len(mine) == 1, listed
        assert mine[0]["directions"] == ["maximize"]
        assert mine[0]["user_attrs"] and any(a["key"] == "objectives" for a in mine[0]["user_attrs"])
        detail = _get(port, f"/api/studies/{mine[0]['study_id']}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [t.number for t in study.trials] and len(trials) == TRIALS
    for t in study.trials:
        got = trials[t.number]
        assert got["state"] == "Complete"
        assert {p["name"]: p["param_external_value"] for p in got["params"]} == {k: str(v) for k, v in t.params.items()}
        attrs = {a["key"]: a["value"] for a in got["user_attrs"]}
        assert attrs["measured"] == str(t.user_attrs["measured"])
        assert ("infeasible" in attrs) == bool(t.user_attrs.get("infeasible"))
        if tc.trial_kind(t) == tc.FEASIBLE:
            assert got["values"] == [pytest.approx(t.values[0])]
    return detail


def test_optuna_dashboard_reads_a_benchflow_study_on_the_embedded_default(tmp_path, monkeypatch):
    from benchflow.store.results import Results

    monkeypatch.setenv("BENCHFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    results = Results.from_env()
    results.store.upgrade()
    storage, study = _make_study(results.config.database_url, "dash")
    assert storage == f"sqlite:///{tmp_path / 'home' / 'benchflow-optuna.db'}"  # what `benchflow tune` prints
    kinds = {tc.trial_kind(t) for t in study.trials}
    assert tc.FEASIBLE in kinds and tc.INFEASIBLE in kinds, "the seed gives SLO breakers too"
    detail = _read_through_the_dashboard(storage, study, tmp_path)
    # the dashboard's best is by value alone (see the module docstring): the highest measured value
    best_by_value = max(study.trials, key=lambda t: t.values[0])
    assert [t["number"] for t in detail["best_trials"]] == [best_by_value.number]


def test_optuna_dashboard_reads_a_benchflow_study_in_the_postgres_schema(tmp_path, pg_url):  # noqa: F811
    storage, study = _make_study(pg_url, "dash-pg")
    assert "search_path" in storage
    _read_through_the_dashboard(storage, study, tmp_path)
