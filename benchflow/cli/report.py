"""``benchflow report CAMPAIGN_ID``: prints a stored campaign's aggregates and comparisons again."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchflow.errors import BenchflowError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print a stored campaign's results from the database")
    p.add_argument("campaign_id", nargs="?", help="campaign id (default: the most recent campaign)")
    p.add_argument("--markdown", action="store_true", help="print the markdown report instead of tables")
    p.add_argument("--json", action="store_true",
                   help="print the campaign, its cells, aggregates and comparisons as one JSON object")
    p.add_argument("--html", metavar="FILE", type=Path,
                   help="also write a self-contained HTML report (charts inline, no network needed) to FILE")
    p.add_argument("--load", metavar="LABEL", help="load point of the CDF and server charts in --html "
                   "(default: the highest)")
    p.set_defaults(func=run)


def _no_campaign_yet(where: str) -> BenchflowError:
    return BenchflowError(f"no campaign yet in {where}: run one with `benchflow run SPEC` "
                          "(e.g. `benchflow run deployments/campaigns/demo.yaml`)")


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def load(campaign_id: str | None) -> tuple:
    from benchflow.store.config import StoreConfig
    from benchflow.store.results import Results

    config = StoreConfig.from_env()
    db_file = _sqlite_file(config.database_url)
    if db_file is not None and not db_file.exists():  # a fresh folder: create nothing, say so
        raise _no_campaign_yet(f"database {config.redacted_database_url}")
    results = Results.from_config(config)
    store = results.store
    if store.current_revision() is None:  # an empty database: nothing was ever stored in it
        raise _no_campaign_yet(results.describe())
    store.check_schema()
    if campaign_id is None:
        latest = store.latest_campaign()
        if latest is None:
            raise BenchflowError(f"no campaign stored in {results.describe()}")
        campaign_id = latest["id"]
    campaign = store.get_campaign(campaign_id)
    if campaign is None:
        raise BenchflowError(f"no campaign {campaign_id!r} in {results.describe()}")
    cells = store.cells(campaign_id)
    if any("trace" in (c.get("load_point") or {}) for c in cells):  # a trace replay's send-time error
        traces = {s["cell_id"]: (s.get("summary") or {}).get("trace") for s in store.summaries(campaign_id)}
        for c in cells:
            if traces.get(c["cell_id"]):
                c["trace"] = traces[c["cell_id"]]
    return results, campaign, cells, store.aggregates(campaign_id), store.comparisons(campaign_id)


def print_json(campaign_id: str | None) -> None:
    """The stored rows as JSON (datetimes as ISO text), for scripts: ``benchflow report --json | jq``."""
    import json

    from benchflow.report_tables import one_line_answer

    results, campaign, cells, aggregates, comparisons = load(campaign_id)
    doc = {"campaign": campaign, "answer": one_line_answer(comparisons),
           "backends": results.store.backends(campaign["id"]), "cells": cells, "aggregates": aggregates,
           "comparisons": comparisons}
    print(json.dumps(doc, indent=1, sort_keys=True, default=str))


def print_report(campaign_id: str | None, markdown: bool = False, html: Path | None = None,
                 load_label: str | None = None) -> None:
    from benchflow import report

    results, campaign, cells, aggregates, comparisons = load(campaign_id)
    backends = results.store.backends(campaign["id"])
    warning = fake_nvml_warning(results, campaign["id"])
    if warning:
        print(warning)
    render = report.render_markdown if markdown else report.render_text
    print(render(campaign, cells, aggregates, comparisons, backends=backends))
    if html is not None:
        write_html(results, campaign, cells, aggregates, comparisons, backends, html, load_label, warning)
        print(f"HTML report: {html}")
    if warning:
        print(warning)
    print(f"results: {results.describe()}; campaign id {campaign['id']}")


def write_html(results, campaign: dict, cells: list, aggregates: list, comparisons: list, backends: list,
               path: Path, load_label: str | None = None, warning: str | None = None) -> Path:
    """Renders the charts (without storing them: a report only reads) and writes the HTML file."""
    from benchflow.charts import render_campaign_charts
    from benchflow.charts.html import render_html

    charts = render_campaign_charts(results, campaign["id"], load_label=load_label, store=False,
                                    server_cells="load")
    text = render_html(campaign, cells, aggregates, comparisons, charts, backends=backends, warning=warning,
                       footer=f"benchflow report · {results.describe()} · campaign id {campaign['id']}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise BenchflowError(f"cannot write the HTML report to {path}: {e.strerror or e}") from e
    return path


def fake_nvml_warning(results, campaign_id: str) -> str | None:
    """The FAKE NVML warning line when the campaign's manifest says its GPU values were faked."""
    from benchflow.store.manifest import FAKE_NVML_WARNING

    try:
        manifest = results.store.manifest(campaign_id) or {}
    except BenchflowError:
        return None
    manifest = manifest.get("manifest", manifest) if isinstance(manifest, dict) else {}
    return FAKE_NVML_WARNING if manifest.get("nvml") == "fake" else None


def run(args: argparse.Namespace) -> int:
    if args.json:
        print_json(args.campaign_id)
    else:
        print_report(args.campaign_id, args.markdown, args.html, args.load)
    return 0
