"""The results database: :class:`ResultStore` (SQLAlchemy 2.0, SQLite or Postgres via psycopg 3).

One session helper (:meth:`ResultStore.session`) commits, rolls back and translates errors:
an unreachable database raises :class:`~benchflow.errors.StorageUnavailableError` (transient),
anything else :class:`~benchflow.errors.StorageError`; the original stays as ``__cause__``.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from benchflow.errors import SchemaTooNewError, StorageError, StorageUnavailableError
from benchflow.results_types import AggregateRow, CellRow, CellSummary, ComparisonRow
from benchflow.store import migrations, reads
from benchflow.store import rows as r
from benchflow.store.config import normalize_database_url, redact_url
from benchflow.store.writes import apply_op

log = logging.getLogger(__name__)

#: Serializes concurrent ``upgrade()`` calls on Postgres (pg_advisory_xact_lock key).
_MIGRATION_LOCK_KEY = 0x62656E6368  # "bench"
#: Alembic keeps its migration context in module globals: one migration per process at a time.
_MIGRATION_THREAD_LOCK = threading.Lock()
#: SQLite errors that are about the schema, not about reaching the database.
_SQLITE_SCHEMA_ERRORS = ("no such table", "no such column", "has no column")


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")  # same integrity as Postgres
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cur.close()

        return engine
    connect_args = postgres_connect_args(parsed.query) if parsed.get_backend_name() == "postgresql" else {}
    return create_engine(parsed, pool_pre_ping=True, pool_timeout=10, connect_args=connect_args)


#: Client-side bounds for Postgres (libpq parameters; a URL query parameter of the same name wins).
#: A server frozen by SIGSTOP still completes TCP handshakes and ACKs data in the kernel, so none of
#: these notices it on an established connection: the total bound per write in ``Results`` does.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000
TCP_USER_TIMEOUT_MS = 20_000


def postgres_connect_args(url_query: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """psycopg connect arguments: connect timeout, TCP keepalives, TCP user timeout and a server-side
    statement timeout, each only where the URL does not set it."""
    args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
    }
    given = set(url_query or ())
    return {k: v for k, v in args.items() if k not in given}


class ResultStore:
    """Rows of campaigns, cells, summaries, aggregates, comparisons and provenance.

    Every write is an idempotent upsert; :meth:`apply` runs several writes in one transaction.
    Reads return plain dicts. The URL's password never appears in the repr, logs or errors.
    """

    def __init__(self, url: str, *, engine: Engine | None = None):
        self._url = normalize_database_url(url)
        self.redacted_url = redact_url(self._url)
        self._password = make_url(self._url).password
        try:
            self.engine = engine or _make_engine(self._url)
        except (ArgumentError, ImportError, ValueError) as e:
            raise StorageError(f"invalid database URL {self.redacted_url}: {self._redact(str(e))}") from e
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"ResultStore({self.redacted_url!r})"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- the session helper and error translation -------------------------------------------

    def _redact(self, message: str) -> str:
        return message.replace(self._password, "***") if self._password else message

    def _translate(self, e: SQLAlchemyError) -> StorageError:
        orig = getattr(e, "orig", None)
        lines = (str(orig) if orig is not None else str(e)).strip().splitlines()
        detail = self._redact(lines[0] if lines else type(e).__name__)
        schema_problem = self.dialect == "sqlite" and any(s in detail for s in _SQLITE_SCHEMA_ERRORS)
        unreachable = isinstance(e, (OperationalError, PoolTimeoutError)) or (
            isinstance(e, DBAPIError) and e.connection_invalidated
        )
        if unreachable and not schema_problem:
            return StorageUnavailableError(f"database {self.redacted_url} unreachable: {detail}")
        hint = " (run `benchflow db upgrade`)" if schema_problem else ""
        return StorageError(f"database {self.redacted_url}: {type(orig or e).__name__}: {detail}{hint}")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success, rolls back on error and translates errors."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as e:
            self._rollback(session)
            raise self._translate(e) from e
        except BaseException:
            self._rollback(session)
            raise
        finally:
            session.close()

    @staticmethod
    def _rollback(session: Session) -> None:
        try:
            session.rollback()
        except SQLAlchemyError as e:  # the connection may be gone already
            log.debug("rollback failed: %s", e)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise self._translate(e) from e

    # ---- schema ---------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The schema revision of the database (None when never migrated).

        Raises :class:`SchemaTooNewError` when the revision is unknown to this benchflow.
        """
        with self._connection() as conn:
            return self._checked_revision(conn)

    def _checked_revision(self, conn: Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        current = MigrationContext.configure(conn).get_current_revision()
        if current is not None and current not in migrations.known_revisions():
            raise SchemaTooNewError(
                f"database schema revision {current} is newer than this benchflow (knows up to "
                f"{migrations.head_revision()}); upgrade benchflow"
            )
        return current

    def check_schema(self) -> str:
        """Returns the current revision; raises StorageError when the database is not migrated to
        this benchflow's head, and SchemaTooNewError when it was migrated by a newer one."""
        current = self.current_revision()
        head = migrations.head_revision()
        if current != head:
            raise StorageError(
                f"database {self.redacted_url} is at schema revision {current or 'none'}, this benchflow "
                f"needs {head}; run `benchflow db upgrade`"
            )
        return current

    def upgrade(self) -> bool:
        """Applies pending migrations; returns whether any ran (a current schema costs one query)."""
        from alembic import command

        head = migrations.head_revision()
        with _MIGRATION_THREAD_LOCK, self._sqlite_file_lock(), self._connection() as conn:
            if self.dialect == "postgresql":  # one migrator at a time; the others wait, then see head
                conn.execute(text("SET LOCAL statement_timeout = 0"))  # migrations may take long
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            current = self._checked_revision(conn)
            if current == head:
                return False
            log.info("migrating %s from %s to %s", self.redacted_url, current or "empty", head)
            command.upgrade(migrations.alembic_config(connection=conn), "head")
        return True

    @contextmanager
    def _sqlite_file_lock(self) -> Iterator[None]:
        """SQLite has no advisory locks: processes migrating one file take turns on a lock file."""
        database = make_url(self._url).database if self.dialect == "sqlite" else None
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def ping(self) -> None:
        """Raises StorageUnavailableError when the database cannot be reached."""
        with self._connection() as conn:
            conn.execute(text("SELECT 1"))

    # ---- writes (each one transaction; all idempotent) ----------------------------------------

    def apply(self, ops: Sequence[r.Op]) -> None:
        """Runs ``ops`` in one transaction: all of them or none."""
        with self.session() as s:
            for op in ops:
                apply_op(s, op.name, op.args)

    def upsert_campaign(self, campaign_id: str, *, name: str, spec: Mapping[str, Any], spec_hash: str,
                        status: r.CampaignStatus = "running", kind: str = "campaign",
                        labels: Mapping[str, Any] | None = None, description: str | None = None,
                        flow_run_id: str | None = None, created_at: datetime | None = None,
                        finished_at: datetime | None = None) -> None:
        """Creates or updates a campaign. Raises CampaignMismatchError if the id has another spec."""
        row = {"id": campaign_id, "name": name, "spec": dict(spec), "spec_hash": spec_hash, "status": status,
               "kind": kind, "labels": dict(labels or {}), "description": description,
               "flow_run_id": flow_run_id, "finished_at": finished_at}
        if created_at is not None:
            row["created_at"] = created_at
        self.apply([r.campaign_op(row)])

    def set_campaign_status(self, campaign_id: str, status: r.CampaignStatus, *,
                            finished_at: datetime | None = None) -> None:
        """Sets the status; a final status stamps ``finished_at`` (now, unless given)."""
        self.apply([r.campaign_status_op(campaign_id, status, finished_at)])

    def pin_baseline(self, campaign_id: str, pinned: bool = True) -> None:
        """Marks a campaign as THE baseline of its name (unpins the others), or unpins it."""
        self.apply([r.pin_baseline_op(campaign_id, pinned)])

    def upsert_backend(self, campaign_id: str, row: r.BackendRow | Mapping[str, Any]) -> None:
        self.apply([r.backend_op(campaign_id, row)])

    def upsert_cell(self, campaign_id: str, row: CellRow | Mapping[str, Any]) -> None:
        self.apply([r.cell_op(campaign_id, row)])

    def upsert_summary(self, campaign_id: str, cell_id: str, summary: CellSummary | Mapping[str, Any]) -> None:
        self.apply([r.summary_op(campaign_id, cell_id, summary)])

    def upsert_aggregates(self, campaign_id: str, rows: Iterable[AggregateRow | Mapping[str, Any]]) -> None:
        self.apply([r.aggregates_op(campaign_id, rows)])

    def upsert_comparisons(self, campaign_id: str, rows: Iterable[ComparisonRow | Mapping[str, Any]]) -> None:
        self.apply([r.comparisons_op(campaign_id, rows)])

    def insert_health_report(self, report: Mapping[str, Any], campaign_id: str | None = None) -> str:
        """Stores a GPU health report; returns its content-derived id."""
        op = r.health_report_op(report, campaign_id)
        self.apply([op])
        return str(op.args["id"])

    def upsert_manifest(self, campaign_id: str, manifest: Mapping[str, Any]) -> None:
        self.apply([r.manifest_op(campaign_id, manifest)])

    def record_artifact(self, campaign_id: str, ref: Any) -> None:
        """Records a verified artifact (an ArtifactRef or its dict)."""
        self.apply([r.artifact_op(campaign_id, ref)])

    # ---- reads --------------------------------------------------------------------------------

    def _read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self.session() as s:
            return fn(s, *args, **kwargs)

    def get_campaign(self, campaign_id: str) -> dict[str, Any] | None:
        return self._read(reads.get_campaign, campaign_id)

    def campaigns(self, **filters: Any) -> list[dict[str, Any]]:
        """Newest first; filters: name, status, kind, limit."""
        return self._read(reads.campaigns, **filters)

    def latest_campaign(self, *, name: str | None = None, status: str | None = "completed",
                        kind: str | None = None, before: datetime | None = None,
                        exclude_id: str | None = None) -> dict[str, Any] | None:
        """The newest matching campaign (nightly baselines: ``before=<this run's created_at>``)."""
        return self._read(reads.latest_campaign, name=name, status=status, kind=kind, before=before,
                          exclude_id=exclude_id)

    def pinned_baseline(self, name: str) -> dict[str, Any] | None:
        return self._read(reads.pinned_baseline, name)

    def completed_cell_ids(self, campaign_id: str) -> set[str]:
        return self._read(reads.completed_cell_ids, campaign_id)

    def backends(self, campaign_id: str) -> list[dict[str, Any]]:
        return self._read(reads.backends, campaign_id)

    def cells(self, campaign_id: str) -> list[dict[str, Any]]:
        return self._read(reads.cells, campaign_id)

    def summaries(self, campaign_id: str) -> list[dict[str, Any]]:
        return self._read(reads.summaries, campaign_id)

    def aggregates(self, campaign_id: str) -> list[dict[str, Any]]:
        return self._read(reads.aggregates, campaign_id)

    def comparisons(self, campaign_id: str) -> list[dict[str, Any]]:
        return self._read(reads.comparisons, campaign_id)

    # ---- the same rows as typed records (benchflow.results_types) ----

    def cell_records(self, campaign_id: str) -> list[CellRow]:
        return self._read(reads.cell_records, campaign_id)

    def summary_records(self, campaign_id: str) -> dict[str, CellSummary]:
        return self._read(reads.summary_records, campaign_id)

    def aggregate_records(self, campaign_id: str) -> list[AggregateRow]:
        return self._read(reads.aggregate_records, campaign_id)

    def comparison_records(self, campaign_id: str) -> list[ComparisonRow]:
        return self._read(reads.comparison_records, campaign_id)

    def manifest(self, campaign_id: str) -> dict[str, Any] | None:
        return self._read(reads.manifest, campaign_id)

    def artifacts(self, campaign_id: str) -> list[dict[str, Any]]:
        return self._read(reads.artifacts, campaign_id)

    def health_reports(self, **filters: Any) -> list[dict[str, Any]]:
        """Newest first; filters: campaign_id, hostname, limit."""
        return self._read(reads.health_reports, **filters)

    def row_counts(self) -> dict[str, int]:
        return self._read(reads.row_counts)
