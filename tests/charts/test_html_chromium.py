"""Acceptance (issue 15): a real small campaign on the embedded default, its HTML report opened
in a real headless Chromium with every host name unresolvable; the charts are there (SVG groups
named after the backends, with non-empty paths) and nothing is fetched from the network.

Skips when Chromium is missing locally; fails instead when CI=true (.ci/run installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

BENCHFLOW = str(Path(sys.executable).parent / "benchflow")
REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("mns2", "mns8")
LOADS = ("c2", "c8")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed (apt-get install -y chromium); CI must run this test")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENCHFLOW_"))}
    env.update(PREFECT_HOME=str(root / "prefect-home"), BENCHFLOW_HOME=str(root / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOCAL_STORAGE_PATH=str(root / "storage"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), BENCHFLOW_GPU_SLOTS="off")
    return env


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> dict:
    """2 backends x 2 load points x 2 repetitions of a simulated engine, few requests each."""
    root = tmp_path_factory.mktemp("html-report")
    spec = {"name": "charts-acceptance", "allow_simulated": True, "model": {"name": "sim-model"},
            "backends": [{"name": name, "kind": "sim", "ready_timeout_s": 60, "stop_grace_s": 2,
                          "engine_args": {"time-scale": 0.25, "max-num-seqs": seqs}}
                         for name, seqs in zip(BACKENDS, (2, 8))],
            "workload": {"dataset": "D(32,8)", "seed": 1, "load_points": [{"concurrency": 2}, {"concurrency": 8}],
                         "max_requests": 12, "warmup_requests": 1, "request_timeout_s": "20s",
                         "max_duration_s": "60s"},
            "repetitions": 2, "slo": {"ttft": {"p99": "500ms"}}, "compare": {"baseline": "mns2"}}
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = _env(root)
    proc = subprocess.run([BENCHFLOW, "run", str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = root / "report.html"
    proc = subprocess.run([BENCHFLOW, "report", "--html", str(html)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search(r"campaign id (\S+)", proc.stdout)
    assert match, proc.stdout
    return {"root": root, "env": env, "html": html, "id": match.group(1), "stdout": proc.stdout}


def _groups_with_paths(dom: str, gid: str) -> list[str]:
    m = re.search(rf'<g id="{re.escape(gid)}"[^>]*>(.*?)</g>', dom, re.S)
    return re.findall(r'<path[^>]* d="([^"]+)"', m.group(1)) if m else []


def test_the_html_report_is_self_contained(campaign):
    text = campaign["html"].read_text()
    assert campaign["stdout"].count("HTML report:") == 1
    # no resource from anywhere: every src/href is a fragment (SVG's internal references)
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', text)
    assert refs and all(r.startswith("#") for r in refs), sorted(set(refs))[:5]
    assert not re.search(r"@import|url\(\s*['\"]?(?!#)", text)
    # the only URLs left are XML namespace names, which are never fetched
    assert {u for u in re.findall(r"https?://[^\s\"'<>]+", text)} <= {
        "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://purl.org/dc/elements/1.1/",
        "http://creativecommons.org/ns#", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"}
    assert "TTFT p99 (ms)" in text and "engine args --max-num-seqs 2" in text and "SLO: TTFT p99" in text


def test_chromium_renders_the_charts_with_every_host_unresolvable(campaign, tmp_path):
    chromium = _chromium()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1200,3000"]
    url = campaign["html"].as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "campaign id " + campaign["id"] in dom, dom[-2000:]  # the page rendered to its end
    for backend in BACKENDS:
        for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
            for stat in ("p50", "p99"):
                assert _groups_with_paths(dom, f"series-lt-{backend}-{metric}-{stat}"), (backend, metric, stat)
            assert _groups_with_paths(dom, f"series-cdf-{backend}-{metric}"), (backend, metric)
        assert f"{backend} at c8, repetition" in dom  # its server time series
    assert _groups_with_paths(dom, "series-forest-mns8-c2-ttft_ms.p99-ci")  # the CI bar
    # the ratio's marker: a <use> of a marker path (whose <defs> may sit inside the first marker's group)
    marker = re.search(r'<g id="series-forest-mns8-c2-ttft_ms.p99"[^>]*>(.*?)</g>', dom, re.S)
    assert marker and ("<use " in marker.group(1) or ' d="' in marker.group(1))
    assert dom.count("<svg") >= 5
    screenshot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    print(f"screenshot of the HTML report: {screenshot}")


def test_the_campaign_charts_are_stored_under_the_campaign_and_embed_in_markdown(campaign, monkeypatch):
    from benchflow.charts import charts_markdown, render_campaign_charts
    from benchflow.store.results import Results

    for k, v in campaign["env"].items():
        if k.startswith("BENCHFLOW_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    results = Results.from_env()
    charts = render_campaign_charts(results, campaign["id"])
    assert list(charts)[:3] == ["latency-throughput.svg", "comparisons.svg", "cdf-c8.svg"]
    assert sum(name.startswith("server-") for name in charts) == len(BACKENDS) * len(LOADS) * 2
    stored = results.artifacts.list(f"campaigns/{campaign['id']}/charts")
    assert sorted(k.rsplit("/", 1)[-1] for k in stored) == sorted(charts)
    key = f"campaigns/{campaign['id']}/charts/latency-throughput.svg"
    assert results.artifacts.get_bytes(key).decode() == charts["latency-throughput.svg"]
    assert key in results.artifact_checksums(campaign["id"])  # recorded as an artifact row too
    # deterministic: rendering again gives the same bytes
    assert render_campaign_charts(results, campaign["id"], store=False)["latency-throughput.svg"] == \
        charts["latency-throughput.svg"]
    sizes = {name: len(svg.encode()) for name, svg in charts.items()}
    print(f"chart sizes (bytes): {sizes}")
    assert max(sizes.values()) < 80_000
    md = charts_markdown(charts)  # the campaign-level charts; the per-cell server series stay in the store
    assert md.count("](data:image/svg+xml;base64,") == 3 and "![latency throughput](data:" in md
    print(f"charts markdown: {len(md.encode())} bytes")


def test_load_cell_frame_joins_backend_load_and_repetition_onto_each_request(campaign, monkeypatch):
    from benchflow.charts import with_request_metrics
    from benchflow.records import load_cell_frame
    from benchflow.store.results import Results

    monkeypatch.setenv("BENCHFLOW_HOME", campaign["env"]["BENCHFLOW_HOME"])
    monkeypatch.delenv("BENCHFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCHFLOW_ARTIFACTS", raising=False)
    results = Results.from_env()
    df = with_request_metrics(load_cell_frame(results, campaign["id"]))
    assert set(df["backend_name"]) == set(BACKENDS) and set(df["load_label"]) == set(LOADS)
    assert set(df["repetition"]) == {0, 1} and df["cell_id"].nunique() == 8
    assert (df["campaign_id"] == campaign["id"]).all()
    measured = df[~df["warmup"]]
    assert len(measured) == 8 * 12 and measured["ttft_ms"].notna().all() and (measured["ttft_ms"] > 0).all()
    one = load_cell_frame(results, campaign["id"], backend="mns8", load_label="c8")
    assert set(one["backend_name"]) == {"mns8"} and set(one["load_label"]) == {"c8"} and "ttft_ms" not in one
    assert load_cell_frame(results, campaign["id"], backend="nope").empty
