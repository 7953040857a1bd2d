"""``benchflow report CAMPAIGN_ID``: prints a stored campaign's aggregates and comparisons again."""

from __future__ import annotations

import argparse

from benchflow.errors import BenchflowError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print a stored campaign's results from the database")
    p.add_argument("campaign_id", nargs="?", help="campaign id (default: the most recent campaign)")
    p.add_argument("--markdown", action="store_true", help="print the markdown report instead of tables")
    p.set_defaults(func=run)


def load(campaign_id: str | None) -> tuple:
    from benchflow.store.results import Results

    results = Results.from_env()
    store = results.store
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
    render = report.render_markdown if markdown else report.render_text
    print(render(campaign, cells, aggregates, comparisons))
    print(f"results: {results.describe()}; campaign id {campaign['id']}")


def run(args: argparse.Namespace) -> int:
    print_report(args.campaign_id, args.markdown)
    return 0
