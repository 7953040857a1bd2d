"""``benchflow flush``: store the results that were spooled while storage was unreachable."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flush",
        help="replay spooled results into the database and artifact store",
        description="Results that could not be stored (database or object store unreachable) wait in "
        "BENCHFLOW_HOME/spool. This replays them, oldest first, and deletes each once stored. "
        "Replaying is idempotent.",
    )
    parser.add_argument("--database-url", default=None, help="overrides BENCHFLOW_DATABASE_URL")
    parser.add_argument("--spool-dir", default=None, help="overrides BENCHFLOW_HOME/spool")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchflow.store.config import StoreConfig
    from benchflow.store.results import Results

    overrides = {k: v for k, v in (("database_url", args.database_url), ("spool_dir", args.spool_dir)) if v}
    cfg = StoreConfig.from_env(**overrides)
    results = Results.from_config(cfg)
    try:
        pending = len(results.spool)
        if pending == 0:
            print(f"nothing to flush in {cfg.spool_dir}")
            return 0
        results.upgrade()
        outcome = results.flush()
    finally:
        results.store.dispose()
    print(f"replayed {outcome.replayed} of {pending} spooled entries into {cfg.redacted_database_url}; "
          f"{outcome.failed} failed, {outcome.remaining} remain in {cfg.spool_dir}")
    if outcome.skipped_locked:
        print("another process is flushing this spool right now")
    return 0 if outcome.remaining == 0 else 1
