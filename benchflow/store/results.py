"""``Results``: the one object a flow uses to store what it measured, without ever losing it.

Each ``persist_*`` call is one unit: its artifacts are uploaded and verified first, then its
rows are written in one transaction (the artifact rows included). Transient failures
(:class:`~benchflow.errors.StorageUnavailableError`) are retried with exponential backoff; if
storing still fails, the whole unit goes to the :class:`~benchflow.store.spool.Spool` with a
WARNING naming the folder, and :meth:`Results.flush` (at the start of the next run, or
``benchflow flush``) replays it later. Everything is idempotent, so replaying twice is harmless.

Each write, its retries included, is bounded by ``write_timeout_s`` (``BENCHFLOW_STORE_WRITE_TIMEOUT_S``,
30 s by default): it runs in a worker thread, and a database or S3 endpoint that hangs (a frozen
server answers TCP in the kernel, then nothing) sends the unit to the spool once the bound is spent.
The worker is left to finish or fail on its own; what it may still write is the same, idempotent data.

When neither the store nor the spool can take a unit (a full disk), :class:`ResultsNotStoredError`
is raised with one line naming the unit and the paths. For a cell whose files could not be stored
anywhere, its rows (and summary) still go to the database when that is reachable; the message then
names the files that were lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from benchflow.errors import (
    BenchflowError,
    ResultsNotStoredError,
    SchemaTooNewError,
    StorageError,
    StorageUnavailableError,
)
from benchflow.results_types import AggregateRow, CellRow, CellSummary, ComparisonRow
from benchflow.store import keys
from benchflow.store import rows as r
from benchflow.store.artifact_factory import artifact_store_from_config
from benchflow.store.artifacts import ArtifactRef, ArtifactStore
from benchflow.store.config import DEFAULT_WRITE_TIMEOUT_S, RetryPolicy, StoreConfig, _positive_float
from benchflow.store.db import ResultStore
from benchflow.store.scrub import redacted_blob
from benchflow.store.spool import Spool

log = logging.getLogger(__name__)

Blob = bytes | str | Path


@dataclass(frozen=True)
class PersistOutcome:
    """``stored`` (``where`` = the database, redacted) or ``spooled`` (``where`` = the spool folder)."""

    status: Literal["stored", "spooled"]
    where: str
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> uri
    error: str | None = None

    @property
    def stored(self) -> bool:
        return self.status == "stored"

    @property
    def spooled(self) -> bool:
        return self.status == "spooled"


@dataclass(frozen=True)
class FlushResult:
    replayed: int = 0
    failed: int = 0
    remaining: int = 0
    skipped_locked: bool = False
    error: str | None = None  # why the replay stopped early (storage still unreachable)

    def __bool__(self) -> bool:
        """True when there was anything to flush."""
        return bool(self.replayed or self.failed or self.remaining)


class Results:
    """Database + artifact store + spool. Build with :meth:`from_env` or :meth:`from_config`."""

    def __init__(self, store: ResultStore, artifacts: ArtifactStore, spool: Spool, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 config: StoreConfig | None = None, write_timeout_s: float | None = None):
        self.store = store
        self.artifacts = artifacts
        self.spool = spool
        self.retry = retry or (config.retry if config else RetryPolicy())
        if write_timeout_s is None:
            write_timeout_s = config.write_timeout_s if config else _positive_float(
                dict(os.environ), "BENCHFLOW_STORE_WRITE_TIMEOUT_S", DEFAULT_WRITE_TIMEOUT_S)
        self.write_timeout_s = float(write_timeout_s)
        self._sleep = sleep
        self._config = config

    @classmethod
    def from_config(cls, cfg: StoreConfig) -> Results:
        log.info("results: database %s, artifacts %s, spool %s", cfg.redacted_database_url, cfg.artifacts,
                 cfg.spool_dir)
        return cls(ResultStore(cfg.database_url), artifact_store_from_config(cfg), Spool(cfg.spool_dir),
                   config=cfg)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Results:
        return cls.from_config(StoreConfig.from_env(env, **overrides))

    def __repr__(self) -> str:
        return f"Results({self.store!r}, {self.artifacts!r}, {self.spool!r})"

    @property
    def config(self) -> StoreConfig:
        """The settings these stores came from (from the environment when built by hand)."""
        if self._config is None:
            self._config = StoreConfig.from_env()
        return self._config

    def describe(self) -> str:
        """Where results go, for logs (the database URL redacted)."""
        where = getattr(self.artifacts, "root", None) or repr(self.artifacts)
        return f"database {self.store.redacted_url}, artifacts {where}"

    def upgrade(self) -> bool:
        """Applies pending migrations (cheap when current); see ResultStore.upgrade."""
        return self.store.upgrade()

    def artifact_checksums(self, campaign_id: str) -> dict[str, str]:
        """key -> sha256 of the campaign's recorded artifacts ({} when the database is unreachable)."""
        try:
            return {a["key"]: a["sha256"] for a in self.store.artifacts(campaign_id)}
        except StorageError as e:
            log.warning("could not list the artifacts of campaign %s: %s", campaign_id, e)
            return {}

    # ---- persist ------------------------------------------------------------------------------

    def persist_campaign(self, campaign_id: str, spec: Any, *, status: r.CampaignStatus = "running",
                         flow_run_id: str | None = None, kind: str | None = None,
                         labels: Mapping[str, Any] | None = None, name: str | None = None,
                         spec_hash: str | None = None, description: str | None = None,
                         backends: Iterable[Mapping[str, Any]] | None = None) -> PersistOutcome:
        """The campaign row and its backends (call at the start of a run).

        ``spec`` is a ``CampaignSpec`` (name, labels, hash and backend rows are taken from it) or
        a plain dict (then ``name`` and ``spec_hash`` are required). Keyword arguments win.
        ``kind`` defaults to the spec label ``kind``, else "campaign".
        """
        keys.validate_campaign_id(campaign_id)
        base = r.campaign_fields_from_spec(spec)
        labels = dict(labels if labels is not None else base.get("labels", {}))
        row = {
            **base, "id": campaign_id, "status": status, "flow_run_id": flow_run_id, "labels": labels,
            "kind": kind or str(labels.get("kind", "campaign")),
            **{k: v for k, v in (("name", name), ("spec_hash", spec_hash), ("description", description)) if v},
        }
        backend_rows = list(backends) if backends is not None else r.backend_rows_from_spec(spec)
        ops = [r.campaign_op(row), *(r.backend_op(campaign_id, b) for b in backend_rows)]
        return self._submit("campaign", campaign_id, ops, {})

    def finish_campaign(self, campaign_id: str, status: r.CampaignStatus) -> PersistOutcome:
        return self._submit("status", campaign_id, [r.campaign_status_op(campaign_id, status)], {})

    def persist_cell(self, campaign_id: str, cell_row: CellRow | Mapping[str, Any],
                     summary: CellSummary | Mapping[str, Any] | None = None,
                     artifacts: Mapping[str, Blob] | None = None) -> PersistOutcome:
        """One measured cell: its artifacts (name -> bytes or file path; ``summary.json`` is added
        from ``summary``), its row (``artifact_uris`` filled in) and its summary (both carry a
        ``schema_version``)."""
        if isinstance(cell_row, CellRow):
            cell_row = cell_row.model_dump()
        if summary is not None:
            summary = CellSummary.model_validate(summary).to_dict()
        cell_id = keys.validate_id(cell_row["cell_id"], "cell_id")
        named: dict[str, Blob] = dict(artifacts or {})
        if summary is not None and keys.SUMMARY not in named:
            named[keys.SUMMARY] = json.dumps(r.json_safe(dict(summary)), indent=1, sort_keys=True).encode()
        blobs = {keys.cell_key(campaign_id, cell_id, name): blob for name, blob in named.items()}
        uris = {name: self.artifacts.uri(keys.cell_key(campaign_id, cell_id, name)) for name in named}
        row = dict(cell_row, artifact_uris={**dict(cell_row.get("artifact_uris") or {}), **uris})
        ops = [r.cell_op(campaign_id, row)]
        if summary is not None:
            ops.append(r.summary_op(campaign_id, cell_id, summary))
        return self._submit("cell", campaign_id, ops, blobs, uris, label=f"cell {cell_id}")

    def persist_aggregates(self, campaign_id: str, rows: Iterable[AggregateRow | Mapping[str, Any]]) -> PersistOutcome:
        return self._submit("aggregates", campaign_id, [r.aggregates_op(campaign_id, rows)], {})

    def persist_comparisons(self, campaign_id: str,
                            rows: Iterable[ComparisonRow | Mapping[str, Any]]) -> PersistOutcome:
        return self._submit("comparisons", campaign_id, [r.comparisons_op(campaign_id, rows)], {})

    def persist_manifest(self, campaign_id: str, manifest: Mapping[str, Any]) -> PersistOutcome:
        """The manifest row, and ``manifest.json`` beside the campaign's artifacts."""
        key = keys.campaign_key(campaign_id, keys.MANIFEST)
        data = json.dumps(r.json_safe(dict(manifest)), indent=1, sort_keys=True).encode()
        ops = [r.manifest_op(campaign_id, manifest)]
        return self._submit("manifest", campaign_id, ops, {key: data}, {keys.MANIFEST: self.artifacts.uri(key)})

    def persist_report(self, campaign_id: str, markdown: str) -> PersistOutcome:
        key = keys.campaign_key(campaign_id, keys.REPORT)
        return self._submit("report", campaign_id, [], {key: markdown.encode()}, {keys.REPORT: self.artifacts.uri(key)})

    def persist_artifact(self, campaign_id: str, name: str, data: Blob) -> PersistOutcome:
        """Any campaign-level file (``backend-<name>.log``, plots, ...) at campaigns/<id>/<name>."""
        key = keys.campaign_key(campaign_id, name)
        return self._submit("artifact", campaign_id, [], {key: data}, {name: self.artifacts.uri(key)})

    def persist_backend_log(self, campaign_id: str, backend_name: str, log_data: Blob) -> PersistOutcome:
        key = keys.backend_log_key(campaign_id, backend_name)
        name = key.rsplit("/", 1)[-1]
        return self._submit("backend-log", campaign_id, [], {key: log_data}, {name: self.artifacts.uri(key)})

    def persist_health_report(self, report: Mapping[str, Any], campaign_id: str | None = None) -> PersistOutcome:
        return self._submit("health", campaign_id, [r.health_report_op(report, campaign_id)], {})

    # ---- the machinery --------------------------------------------------------------------------

    def _store_now(self, campaign_id: str | None, ops: Sequence[r.Op], blobs: Mapping[str, Blob]) -> None:
        refs: list[ArtifactRef] = []
        for key, blob in blobs.items():
            put = self.artifacts.put_bytes if isinstance(blob, bytes) else self.artifacts.put_file
            try:
                refs.append(put(key, blob))  # type: ignore[arg-type]
            except StorageError as e:
                e.benchflow_phase = "artifacts"  # type: ignore[attr-defined]
                raise
        artifact_ops = [r.artifact_op(campaign_id, ref) for ref in refs] if campaign_id else []
        self.store.apply([*ops, *artifact_ops])

    def _bounded(self, fn: Callable[[], None], timeout_s: float, what: str) -> None:
        """Runs ``fn`` in a worker thread; StorageUnavailableError when it is not done in time."""
        if self.store.dialect == "sqlite" and ":memory:" in self.store.redacted_url:
            fn()  # an in-memory database exists in one thread only (and cannot hang)
            return
        outcome: dict[str, BaseException] = {}
        done = threading.Event()

        def work() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = e
            finally:
                done.set()

        threading.Thread(target=work, name="benchflow-store-write", daemon=True).start()
        if not done.wait(max(timeout_s, 0.0)):
            raise StorageUnavailableError(
                f"{what}: storage did not answer within {self.write_timeout_s:g}s "
                "(BENCHFLOW_STORE_WRITE_TIMEOUT_S); is the database or S3 endpoint hung?")
        if "error" in outcome:
            raise outcome["error"]

    def _with_retry(self, fn: Callable[[], None], what: str) -> None:
        """Tries ``fn`` with backoff on transient errors, all tries within ``write_timeout_s``."""
        delays = self.retry.delays_s()
        deadline = time.monotonic() + self.write_timeout_s
        for attempt in range(len(delays) + 1):
            try:
                self._bounded(fn, deadline - time.monotonic(), what)
                return
            except StorageUnavailableError as e:
                if attempt == len(delays) or time.monotonic() + delays[attempt] >= deadline:
                    raise
                log.info("%s failed (%s); retry %d/%d in %.2fs", what, e, attempt + 1, len(delays), delays[attempt])
                self._sleep(delays[attempt])

    def _submit(self, kind: str, campaign_id: str | None, ops: Sequence[r.Op], blobs: Mapping[str, Blob],
                uris: Mapping[str, str] | None = None, label: str | None = None) -> PersistOutcome:
        what = f"storing {label or kind} of campaign {campaign_id}"
        blobs = {key: redacted_blob(key, blob) for key, blob in blobs.items()}
        try:
            self._with_retry(lambda: self._store_now(campaign_id, ops, blobs), what)
            return PersistOutcome("stored", self.store.redacted_url, dict(uris or {}))
        except SchemaTooNewError:
            raise
        except StorageError as e:
            error = e
        try:
            path = self.spool.put(kind, campaign_id, ops, blobs, reason=str(error))
        except StorageError as spool_error:
            self._not_stored(campaign_id, ops, blobs, label or kind, error, spool_error)
            raise  # not reached: _not_stored raises
        log.warning("%s failed: %s. Spooled to %s; it is replayed by the next run or `benchflow flush`",
                    what, error, path)
        return PersistOutcome("spooled", str(path), dict(uris or {}), error=str(error))

    def _not_stored(self, campaign_id: str | None, ops: Sequence[r.Op], blobs: Mapping[str, Blob], label: str,
                    error: StorageError, spool_error: StorageError) -> None:
        """Neither the store nor the spool took the unit: keep its rows if only the files failed, then
        raise ResultsNotStoredError with one line saying what was lost and where it was to go."""
        unit = f"{label} of campaign {campaign_id}" if campaign_id else label
        causes = f"{_one_line(error)}; {_one_line(spool_error)}"
        if ops and blobs and getattr(error, "benchflow_phase", None) == "artifacts":
            try:
                missing: list[str] = []
                self._with_retry(lambda: missing.extend(self._store_rows_and_what_fits(campaign_id, ops, blobs)),
                                 f"storing the rows of {unit}")
            except StorageError as rows_error:
                causes += f"; its rows could not be stored either: {_one_line(rows_error)}"
            else:
                files = ", ".join(k.rsplit("/", 1)[-1] for k in missing) or "none"
                raise ResultsNotStoredError(
                    f"{unit}: files not stored ({files}), the artifact store and the spool {self.spool.root} "
                    f"are full or failing: {causes}; its row and summary are in the database "
                    f"{self.store.redacted_url}") from spool_error
        raise ResultsNotStoredError(
            f"{unit} was neither stored nor spooled (spool {self.spool.root}): {causes}") from spool_error

    def _store_rows_and_what_fits(self, campaign_id: str | None, ops: Sequence[r.Op],
                                  blobs: Mapping[str, Blob]) -> list[str]:
        """Stores the files that can be stored and every row (the cell's ``artifact_uris`` without the
        lost files); returns the keys of the files that could not be stored."""
        refs: list[ArtifactRef] = []
        missing: list[str] = []
        for key, blob in blobs.items():
            put = self.artifacts.put_bytes if isinstance(blob, bytes) else self.artifacts.put_file
            try:
                refs.append(put(key, blob))  # type: ignore[arg-type]
            except StorageError:
                missing.append(key)
        lost_uris = {self.artifacts.uri(k) for k in missing}
        kept_ops = [_without_uris(op, lost_uris) for op in ops]
        artifact_ops = [r.artifact_op(campaign_id, ref) for ref in refs] if campaign_id else []
        self.store.apply([*kept_ops, *artifact_ops])
        return missing

    def flush(self) -> FlushResult:
        """Replays the spool, oldest first; an entry is deleted only once it is stored."""
        with self.spool.lock() as held:
            if not held:
                log.info("another process is flushing %s; skipping", self.spool.root)
                return FlushResult(remaining=len(self.spool), skipped_locked=True)
            replayed = failed = 0
            error = None
            for entry in self.spool.entries():
                try:
                    blobs = entry.verified_blobs()
                    self._bounded(lambda: self._store_now(entry.campaign_id, entry.ops, blobs),  # noqa: B023
                                  self.write_timeout_s, f"replaying {entry.path}")
                except StorageUnavailableError as e:
                    error = str(e)
                    log.warning("storage still unreachable (%s); %d spooled entries wait in %s",
                                e, len(self.spool), self.spool.root)
                    break
                except (BenchflowError, ValueError) as e:
                    failed += 1
                    log.error("could not replay spooled %s: %s; left in place", entry.path, e)
                    continue
                self.spool.remove(entry)
                replayed += 1
            result = FlushResult(replayed=replayed, failed=failed, remaining=len(self.spool), error=error)
        if replayed or result.remaining:
            log.info("flushed spool %s: %s", self.spool.root, result)
        return result


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _without_uris(op: r.Op, lost: set[str]) -> r.Op:
    """A cell op whose ``artifact_uris`` no longer point at files that were not stored."""
    if op.name != "cell" or not lost:
        return op
    row = dict(op.args["row"])
    row["artifact_uris"] = {k: v for k, v in (row.get("artifact_uris") or {}).items() if v not in lost}
    return r.Op(op.name, {**op.args, "row": row})
