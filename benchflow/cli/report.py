"""``benchflow report CAMPAIGN_ID``: prints a stored campaign's aggregates and comparisons again."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchflow.errors import BenchflowError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print a stored campaign's results from the database")
    p.add_argument("campaign_id", nargs="?", help="campaign id (default: the most recent campaign)")
    p.add_argument("--markdown", action="store_true", help="print the markdown report instead of tables")
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
    return results, campaign, store.cells(campaign_id), store.aggregates(campaign_id), store.comparisons(campaign_id)


def print_report(campaign_id: str | None, markdown: bool = False) -> None:
    from benchflow import report

    results, campaign, cells, aggregates, comparisons = load(campaign_id)
    warning = fake_nvml_warning(results, campaign["id"])
    if warning:
        print(warning)
    render = report.render_markdown if markdown else report.render_text
    print(render(campaign, cells, aggregates, comparisons))
    if warning:
        print(warning)
    print(f"results: {results.describe()}; campaign id {campaign['id']}")


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
    print_report(args.campaign_id, args.markdown)
    return 0
