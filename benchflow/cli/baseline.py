"""``benchflow baseline pin|unpin|show``: the campaign nightly runs are compared with.

A pinned campaign is THE baseline of its spec name (pinning one unpins the others); without one,
a nightly run is compared with the last completed nightly of the same name.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="pin or show the baseline campaign of nightly regression checks")
    inner = p.add_subparsers(dest="baseline_command", metavar="SUBCOMMAND")
    for name, text in (("pin", "make CAMPAIGN_ID the baseline of its spec name"),
                       ("unpin", "stop using CAMPAIGN_ID as a baseline")):
        q = inner.add_parser(name, help=text, description=text)
        q.add_argument("campaign_id")
        q.set_defaults(func=run, pinned=name == "pin")
    s = inner.add_parser("show", help="the baseline a nightly of NAME is compared with now")
    s.add_argument("name", help="campaign spec name")
    s.set_defaults(func=show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _store():
    from benchflow.store.config import StoreConfig
    from benchflow.store.db import ResultStore

    store = ResultStore(StoreConfig.from_env().database_url)
    store.check_schema()
    return store


def run(args: argparse.Namespace) -> int:
    from benchflow.errors import BenchflowError

    store = _store()
    campaign = store.get_campaign(args.campaign_id)
    if campaign is None:
        raise BenchflowError(f"no campaign {args.campaign_id} in {store.redacted_url}")
    store.pin_baseline(args.campaign_id, args.pinned)
    state = "now the baseline" if args.pinned else "no longer a baseline"
    print(f"campaign {args.campaign_id} ({campaign['name']}, {campaign['status']}) is {state}")
    return 0


def show(args: argparse.Namespace) -> int:
    from benchflow.regression import find_baseline

    store = _store()
    pinned = store.pinned_baseline(args.name)
    found = find_baseline(store, args.name, campaign_id="")
    if found is None:
        print(f"{args.name}: no baseline yet (no pinned campaign, no completed nightly)")
        return 1
    how = "pinned" if pinned and pinned["id"] == found["id"] else "last completed nightly"
    print(f"{args.name}: {found['id']} ({how}, {found['status']}, created {found['created_at']})")
    return 0
