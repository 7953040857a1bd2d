"""`benchflow report` in a folder with no campaign, and the README's sqlite3 example query."""

from __future__ import annotations

import sqlite3

from benchflow.cli import main

#: The README's example (kept identical to it): one row per measured cell of the latest campaign.
README_QUERY = """select c.backend_name, c.load_label, c.repetition, s.ttft_ms_p99, s.output_throughput
from cells c join cell_summaries s using (campaign_id, cell_id)
where c.campaign_id = (select id from campaigns order by created_at desc limit 1)
order by 1, 2, 3"""


def test_report_in_a_fresh_folder_says_no_campaign_yet_and_creates_nothing(tmp_benchflow_home, capsys):
    assert main(["report"]) == 1
    err = capsys.readouterr().err
    assert "no campaign yet" in err and "benchflow run" in err
    assert "db upgrade" not in err
    assert not tmp_benchflow_home.exists()


def test_report_on_an_empty_database_says_no_campaign_yet(tmp_benchflow_home, capsys):
    tmp_benchflow_home.mkdir()
    sqlite3.connect(tmp_benchflow_home / "benchflow.db").close()
    assert main(["report"]) == 1
    err = capsys.readouterr().err
    assert "no campaign yet" in err and "db upgrade" not in err


def test_the_readme_query_runs_against_the_store_schema(tmp_benchflow_home):
    from benchflow.store.results import Results

    Results.from_env().upgrade()
    with sqlite3.connect(tmp_benchflow_home / "benchflow.db") as conn:
        assert conn.execute(README_QUERY).fetchall() == []
