"""The HTML report and the campaign charts without a real campaign: empty and failed campaigns
render, and the SVG is byte-identical across processes (stored charts do not churn)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchflow.charts import render_campaign_charts
from benchflow.charts.html import render_html
from benchflow.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_a_campaign_without_results_still_renders_charts_and_html(tmp_benchflow_home, tmp_path, capsys):
    from benchflow.store.results import Results

    results = Results.from_env()
    results.upgrade()
    results.store.upsert_campaign("empty-1", name="empty", spec={"slo": {}}, spec_hash="h", status="failed")
    charts = render_campaign_charts(results, "empty-1")
    assert list(charts) == ["latency-throughput.svg"]
    cells = [{"cell_id": "a-c4-0", "backend_name": "a", "load_label": "c4", "repetition": 0, "status": "failed",
              "error": "backend died <exit 1>"}]
    html = render_html({"id": "empty-1", "name": "empty", "status": "failed"}, cells, [], [], charts)
    assert "No backend is clearly better" in html and "backend died &lt;exit 1&gt;" in html  # escaped
    assert html.count("<svg") == 1 and "<?xml" not in html and "DOCTYPE svg" not in html
    out = tmp_path / "sub" / "r.html"
    assert main(["report", "empty-1", "--html", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and f"HTML report: {out}" in capsys.readouterr().out


def test_the_svg_is_byte_identical_across_processes():
    code = ("from benchflow.charts import forest_svg; import sys; sys.stdout.write(forest_svg(["
            "{'load_label': 'c4', 'metric': 'ttft_ms.p99', 'baseline_ref': 'a', 'candidate_ref': 'b', "
            "'ratio': 0.5, 'ci_low': 0.4, 'ci_high': 0.6, 'verdict': 'better', 'tolerance': 0.02}]))")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                    timeout=120, check=True).stdout for _ in range(2))
    assert first == second and first.startswith("<?xml") and 'id="series-forest-b-c4-ttft_ms.p99"' in first
