"""`benchflow db ...` and `benchflow flush` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchflow.cli import main
from benchflow.store import migrations
from benchflow.store.config import RetryPolicy
from benchflow.store.db import ResultStore
from benchflow.store.results import Results
from tests.support import free_port
from tests.store import factories as f

REPO = Path(__file__).resolve().parents[2]


def test_db_upgrade_then_current(tmp_benchflow_home: Path, capsys: pytest.CaptureFixture):
    assert main(["db", "current"]) == 1
    assert "none (empty database)" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert "upgraded to revision 0002" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert "already at revision 0002" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert "revision 0002 (head)" in capsys.readouterr().out


def test_db_refuses_a_newer_schema(tmp_benchflow_home: Path, capsys: pytest.CaptureFixture):
    assert main(["db", "upgrade"]) == 0
    store = ResultStore(f"sqlite:///{tmp_benchflow_home / 'benchflow.db'}")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0042'")
    store.dispose()
    assert main(["db", "upgrade"]) == 1
    assert "revision 0042 is newer than this benchflow" in capsys.readouterr().err


def test_db_unreachable_is_a_clear_error(capsys: pytest.CaptureFixture):
    url = f"postgresql://bench:pw-secret@127.0.0.1:{free_port()}/bench"
    assert main(["db", "upgrade", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "unreachable" in err and "pw-secret" not in err and "Traceback" not in err


def test_schema_sql_is_generated_from_the_migrations(capsys: pytest.CaptureFixture):
    assert main(["db", "sql"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE cell_summaries" in out and "JSONB" in out
    assert (REPO / "sql" / "schema.sql").read_text() == out, "regenerate: benchflow db sql > sql/schema.sql"
    assert migrations.schema_sql("sqlite").count("CREATE TABLE") == 10


def test_flush_replays_the_spool(tmp_benchflow_home: Path, capsys: pytest.CaptureFixture):
    assert main(["flush"]) == 0
    assert "nothing to flush" in capsys.readouterr().out
    good = Results.from_env()
    good.upgrade()
    good.persist_campaign("camp-1", name="n", spec=f.spec(), spec_hash="h")
    dead = Results(ResultStore(f"postgresql+psycopg://u@127.0.0.1:{free_port()}/x"), good.artifacts, good.spool,
                   retry=RetryPolicy(attempts=1))
    assert dead.persist_cell("camp-1", f.cell("cell-0"), f.summary()).status == "spooled"

    assert main(["flush"]) == 0
    assert "replayed 1 of 1 spooled entries" in capsys.readouterr().out
    assert good.store.completed_cell_ids("camp-1") == {"cell-0"}
    assert len(good.spool) == 0
