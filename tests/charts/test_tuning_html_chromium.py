"""`benchflow tune report ID --html out.html` (issues 14 and 15): a two-objective study with a
confirmation step, made by benchflow's study loop on the embedded default (its trials measured by
the virtual-time simulator), written by the real CLI and opened in a real headless Chromium with
every host name unresolvable. The charts are there (SVG groups named after the series, with
non-empty paths), so are the tables and the winning flags, and nothing is fetched from the network.
The screenshot is kept as a test artifact (its path is printed).

Skips when Chromium is missing locally; fails instead when CI=true (.ci/run installs it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.charts.test_html_chromium import _chromium, _env, _groups_with_paths
from tests.charts.test_tuning_charts import THROUGHPUT_AND_TTFT, virtual_fakes, virtual_spec

pytestmark = pytest.mark.integration

BENCHFLOW = str(Path(sys.executable).parent / "benchflow")
STUDY = "html-study"
TRIALS = 24


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    from benchflow.store.results import Results
    from benchflow.tuning.confirm import confirm_study
    from benchflow.tuning.study import prepare_storage, run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path_factory.mktemp("tune-html")
    env = _env(root)
    results = Results.from_env({"BENCHFLOW_HOME": env["BENCHFLOW_HOME"]})
    results.store.upgrade()
    storage = prepare_storage(results.config.database_url)
    spec = virtual_spec(objective={"load_point": "c32", "metrics": THROUGHPUT_AND_TTFT}, trials={"count": TRIALS},
                        confirm={"top_k": 2, "repetitions": 3})
    fakes = virtual_fakes()
    run_study(spec, storage, fakes.steps_for, study_id=STUDY)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    confirm = confirm_study(study, spec, fakes.steps_for)
    html = root / "out" / "tune.html"
    proc = subprocess.run([BENCHFLOW, "tune", "report", STUDY, "--html", str(html)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"html": html, "stdout": proc.stdout, "study": optuna.load_study(study_name=STUDY, storage=storage),
            "confirm": confirm}


def test_the_tuning_html_report_is_self_contained_and_complete(tuned):
    text = tuned["html"].read_text()
    assert tuned["stdout"].count("HTML report:") == 1 and "data:image" not in tuned["stdout"]
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', text)
    assert refs and all(r.startswith("#") for r in refs), sorted(set(refs))[:5]
    assert not re.search(r"@import|url\(\s*['\"]?(?!#)", text)
    assert {u for u in re.findall(r"https?://[^\s\"'<>]+", text)} <= {
        "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://purl.org/dc/elements/1.1/",
        "http://creativecommons.org/ns#", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"}
    study = tuned["study"]
    assert f"{TRIALS} trials:" in text and "optuna-dashboard sqlite:///" in text
    front = {t.number for t in study.best_trials}
    assert front and "Pareto front of" in text
    assert text.count('<tr class="best">') == len(front), "the front's rows are highlighted in the trials table"
    assert "Confirmation re-measurements (output_throughput)" in text and tuned["confirm"]["text"] in text


def test_chromium_renders_the_tuning_charts_and_tables_with_every_host_unresolvable(tuned, tmp_path):
    chromium = _chromium()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1200,4000"]
    url = tuned["html"].as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert f"study {STUDY} · open it live" in dom, dom[-2000:]  # the page rendered to its end
    for metric in THROUGHPUT_AND_TTFT:
        for kind in ("feasible", "infeasible", "not-measured", "best"):
            assert _groups_with_paths(dom, f"series-history-{metric}-{kind}") or \
                "<use " in _group(dom, f"series-history-{metric}-{kind}"), (metric, kind)
    for name in ("front", "dominated"):
        assert _groups_with_paths(dom, f"series-pareto-{name}") or "<use " in _group(dom, f"series-pareto-{name}")
    for param in ("max-num-seqs", "gpu-memory-utilization"):
        assert _groups_with_paths(dom, f"series-importance-output_throughput-{param}"), param
    assert dom.count("<svg") >= 3
    rows = re.search(r'<table id="table-trials">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert rows.count("<tr") == TRIALS
    assert re.search(r'<pre id="serve-command">benchflow sim --model sim-llama-8b --engine-arg max-num-seqs=', dom)
    assert "kind: sim" in re.search(r'<pre id="backend-block">(.*?)</pre>', dom, re.S).group(1)
    assert '"max-num-batched-tokens":' in re.search(r'<pre id="flags-json">(.*?)</pre>', dom, re.S).group(1)
    screenshot = tmp_path / "tuning-report.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    print(f"screenshot of the tuning HTML report: {screenshot}")


def _group(dom: str, gid: str) -> str:
    m = re.search(rf'<g id="{re.escape(gid)}"[^>]*>(.*?)</g>', dom, re.S)
    assert m, f"no <g id={gid!r}> in the rendered page"
    return m.group(1)
