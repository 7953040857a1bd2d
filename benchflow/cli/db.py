"""``benchflow db upgrade|current|sql``: the results database schema (Alembic migrations in sql/)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="results database schema: upgrade, show the current revision, print the DDL",
        description="Manage the results database schema (BENCHFLOW_DATABASE_URL, default SQLite under "
        "BENCHFLOW_HOME). Migrations are the Alembic scripts in sql/migrations.",
    )
    parser.add_argument("action", choices=["upgrade", "current", "sql"],
                        help="upgrade: apply pending migrations; current: print the revision; "
                        "sql: print the DDL of all migrations (no database needed)")
    parser.add_argument("--database-url", default=None,
                        help="overrides BENCHFLOW_DATABASE_URL (postgres:// URLs use psycopg 3)")
    parser.add_argument("--dialect", choices=["postgresql", "sqlite"], default="postgresql",
                        help="dialect for `sql` (default postgresql)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchflow.store import migrations

    if args.action == "sql":
        sys.stdout.write(migrations.schema_sql(args.dialect))
        return 0

    from benchflow.store.config import StoreConfig
    from benchflow.store.db import ResultStore

    overrides = {"database_url": args.database_url} if args.database_url else {}
    cfg = StoreConfig.from_env(**overrides)
    store = ResultStore(cfg.database_url)
    try:
        head = migrations.head_revision()
        if args.action == "upgrade":
            ran = store.upgrade()
            verb = "upgraded to" if ran else "already at"
            print(f"{cfg.redacted_database_url}: {verb} revision {head} (head)")
            return 0
        current = store.current_revision()
        state = "head" if current == head else f"behind; head is {head}, run `benchflow db upgrade`"
        print(f"{cfg.redacted_database_url}: revision {current or 'none (empty database)'} ({state})")
        return 0 if current == head else 1
    finally:
        store.dispose()
