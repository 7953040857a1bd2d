"""Where a study lives: beside the results database on SQLite, in schema ``optuna`` on Postgres
(both benchflow and Optuna keep an ``alembic_version`` table, so they cannot share a namespace)."""

from __future__ import annotations

import optuna
from sqlalchemy import create_engine, inspect

from benchflow.store.results import Results
from benchflow.tuning.study import prepare_storage, run_study, storage_url
from tests.store.conftest import pg_server, pg_url  # noqa: F401 - fixtures
from tests.tuning.fakes import TuneFakes
from tests.tuning.test_study import spec


def test_sqlite_study_is_a_file_beside_the_results_database():
    assert storage_url("sqlite:////h/benchflow.db") == "sqlite:////h/benchflow-optuna.db"
    assert storage_url("sqlite:///:memory:") == "sqlite:///:memory:"


def test_postgres_study_lives_in_its_own_schema_of_the_results_database(pg_url):  # noqa: F811
    results = Results.from_env({"BENCHFLOW_DATABASE_URL": pg_url, "BENCHFLOW_HOME": "/tmp/unused-home"})
    results.store.upgrade()
    url = prepare_storage(results.config.database_url)
    assert "search_path" in url
    out = run_study(spec(trials={"count": 3}), url, TuneFakes().steps_for, study_id="pg1")
    assert out.finished == 3
    assert len(optuna.load_study(study_name="pg1", storage=url).trials) == 3
    engine = create_engine(results.config.database_url)
    try:
        names = inspect(engine)
        assert "trials" in names.get_table_names(schema="optuna")
        assert "trials" not in names.get_table_names(schema="public")
    finally:
        engine.dispose()
    results.store.upgrade()  # benchflow's own schema version is untouched
