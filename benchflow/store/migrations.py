"""Alembic, configured programmatically: the one schema manager of the results database.

The scripts live in ``sql/migrations`` at the repository root (next to the ``benchflow``
package). ``BENCHFLOW_MIGRATIONS_DIR`` overrides that; an installed wheel carries them under
``<prefix>/share/benchflow/sql/migrations``.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

from benchflow.errors import StorageError

#: Dialect name -> a URL that selects it for offline SQL rendering.
_OFFLINE_URLS = {"postgresql": "postgresql+psycopg://", "sqlite": "sqlite://"}


def migrations_dir() -> Path:
    """Where the Alembic scripts are (env.py and versions/)."""
    import benchflow

    override = os.environ.get("BENCHFLOW_MIGRATIONS_DIR")
    candidates = [Path(override)] if override else []
    candidates += [
        Path(benchflow.__file__).resolve().parents[1] / "sql" / "migrations",
        Path(sys.prefix) / "share" / "benchflow" / "sql" / "migrations",
    ]
    for path in candidates:
        if (path / "env.py").is_file():
            return path
    raise StorageError(
        "cannot find the database migrations (sql/migrations/env.py); looked in "
        + ", ".join(str(p) for p in candidates)
        + ". Set BENCHFLOW_MIGRATIONS_DIR to the sql/migrations folder of your benchflow checkout."
    )


def alembic_config(url: str | None = None, *, connection: Any = None, output: io.StringIO | None = None) -> Any:
    """An Alembic ``Config`` without an ini file."""
    from alembic.config import Config

    cfg = Config(output_buffer=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    if head is None:
        raise StorageError(f"no migrations in {migrations_dir()}")
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in script_directory().walk_revisions()}


def offline_sql(dialect: str = "postgresql") -> str:
    """The DDL of every migration, rendered for ``dialect`` without a database (Alembic offline mode)."""
    from alembic import command

    if dialect not in _OFFLINE_URLS:
        raise StorageError(f"unknown dialect {dialect!r}; choose one of {sorted(_OFFLINE_URLS)}")
    out = io.StringIO()
    command.upgrade(alembic_config(_OFFLINE_URLS[dialect], output=out), "head", sql=True)
    return out.getvalue()


def schema_sql(dialect: str = "postgresql") -> str:
    """The readable DDL that ``sql/schema.sql`` holds: :func:`offline_sql` with a header."""
    body = "\n".join(line.rstrip() for line in offline_sql(dialect).splitlines()).strip()
    header = (
        f"-- benchflow results schema ({dialect}), generated from the Alembic migrations in sql/migrations\n"
        f"-- by `benchflow db sql --dialect {dialect}`. Do not edit: add a migration, then regenerate.\n"
        "-- Apply migrations with `benchflow db upgrade`, not with this file.\n"
    )
    return f"{header}\n{body}\n"
