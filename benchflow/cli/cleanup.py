"""``benchflow cleanup``: removes leftover benchflow containers (label ``benchflow.managed=true``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cleanup",
        help="remove leftover benchflow containers",
        description="Stops (with a grace period) and removes containers labelled benchflow.managed=true, "
        "for example after a crashed run. Uses the Docker engine of DOCKER_HOST or the local socket.",
    )
    p.add_argument("--campaign", metavar="ID", help="only the containers of this campaign id")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--grace-s", type=float, default=10.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL for running containers (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchflow.launch.docker_cleanup import connect, remove_leftovers

    client = connect()
    try:
        done = remove_leftovers(client, args.campaign, args.grace_s, dry_run=args.dry_run)
    finally:
        client.close()
    scope = f" of campaign {args.campaign}" if args.campaign else ""
    if not done:
        print(f"no leftover benchflow containers{scope}")
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for leftover in done:
        print(f"{verb} {leftover.describe()}")
    print(f"{verb} {len(done)} container(s){scope}")
    return 0
