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


def test_a_fake_nvml_is_labelled_at_the_top_of_the_manifest(monkeypatch):
    from benchflow.store.manifest import build_manifest

    monkeypatch.delenv("BENCHFLOW_FAKE_NVML", raising=False)
    assert build_manifest()["nvml"] is None
    assert build_manifest(health_report={"driver_version": "550.1", "fake_nvml": False})["nvml"] == "real"
    faked = build_manifest(health_report={"driver_version": "550.1", "fake_nvml": True})
    assert faked["nvml"] == "fake" and "FAKE NVML" in faked["warning"]
    monkeypatch.setenv("BENCHFLOW_FAKE_NVML", "healthy")
    assert build_manifest()["nvml"] == "fake"


def test_the_report_of_a_fake_nvml_campaign_says_so(tmp_benchflow_home, monkeypatch, capsys):
    from benchflow.store.manifest import build_manifest
    from benchflow.store.results import Results

    results = Results.from_env()
    results.upgrade()
    store = results.store
    store.upsert_campaign("fake-1", name="fake", spec={}, spec_hash="h", status="completed")
    monkeypatch.setenv("BENCHFLOW_FAKE_NVML", "healthy")
    store.upsert_manifest("fake-1", build_manifest())
    monkeypatch.delenv("BENCHFLOW_FAKE_NVML")
    assert main(["report", "fake-1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("WARNING: GPU values") and "FAKE NVML" in out.splitlines()[0]
    store.upsert_campaign("real-1", name="real", spec={}, spec_hash="h", status="completed")
    store.upsert_manifest("real-1", build_manifest(health_report={"fake_nvml": False}))
    assert main(["report", "real-1"]) == 0
    assert "FAKE NVML" not in capsys.readouterr().out


def test_report_json_prints_the_stored_rows_and_the_answer(tmp_benchflow_home, capsys):
    import json

    from benchflow.store.results import Results

    results = Results.from_env()
    results.upgrade()
    results.store.upsert_campaign("j-1", name="j", spec={}, spec_hash="h", status="completed")
    assert main(["report", "j-1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["campaign"]["id"] == "j-1" and doc["cells"] == [] and doc["comparisons"] == []
    assert doc["answer"].startswith("No backend is clearly better")
