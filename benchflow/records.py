"""Raw per-request facts (METRICS.md, "Raw facts per request") and the per-cell run record.

These are the contract between the load generator (which fills them), the statistics (which
derive every metric from them) and the stores (which persist them as parquet). Every ``*_ns``
value is monotonic ``time.perf_counter_ns()``; ``*_at`` values are timezone-aware UTC.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

#: Error classes (METRICS.md). ``None`` means the request succeeded.
#: ``invalid_usage``: the server's ``usage`` is impossible (negative, or more output tokens than
#: the request allowed), so the request cannot be counted.
ERROR_CLASSES = ("http_4xx", "http_5xx", "timeout", "connection", "stream_interrupted", "no_output",
                 "invalid_usage")


@dataclass(slots=True)
class RequestRecord:
    """One request's raw facts. Metrics are never stored here; they are derived by ``stats``."""

    request_id: int
    warmup: bool
    start_ns: int
    #: Open loop only: the intended send time on the same clock as ``start_ns``.
    scheduled_ns: int | None = None
    #: Open loop only: when the request became due and entered the client's queue (the send
    #: waits there for a free slot under ``max_concurrency``); ``start_ns − queued_ns`` is its
    #: client queue time (METRICS.md, "Client queue time").
    queued_ns: int | None = None
    #: When the stream closed (or the request failed). ``None`` while in flight.
    end_ns: int | None = None
    #: One entry per SSE message that carried output: ``(t_ns, n_tokens or None)``.
    chunks: list[tuple[int, int | None]] = field(default_factory=list)
    status: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    #: Input token count: ``usage.prompt_tokens`` when sent, else the workload's estimate.
    input_tokens: int | None = None
    #: ``usage.completion_tokens`` from the final message; ``None`` when the server sent no usage.
    completion_tokens: int | None = None
    #: True when the cell ended while this request was still in flight.
    incomplete: bool = False

    @property
    def succeeded(self) -> bool:
        """2xx and at least one output message, not cut off by the end of the cell."""
        return (
            not self.incomplete
            and self.error_class is None
            and self.status is not None
            and 200 <= self.status < 300
            and len(self.chunks) > 0
        )


#: Column order of the requests table (``requests.parquet``).
REQUEST_COLUMNS = [
    "request_id", "warmup", "start_ns", "scheduled_ns", "queued_ns", "end_ns", "chunk_t_ns", "chunk_tokens",
    "status", "error_class", "error_message", "input_tokens", "completion_tokens", "incomplete",
]


def records_to_frame(records: list[RequestRecord]) -> pd.DataFrame:
    """Records as a DataFrame; chunk times and token counts become two list columns."""
    rows = []
    for r in records:
        d = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "chunks"}
        d["chunk_t_ns"] = [t for t, _ in r.chunks]
        d["chunk_tokens"] = [n for _, n in r.chunks]
        rows.append(d)
    df = pd.DataFrame(rows, columns=REQUEST_COLUMNS)
    for col in ("scheduled_ns", "queued_ns", "end_ns", "status", "input_tokens", "completion_tokens"):
        df[col] = df[col].astype("Int64")
    for col in ("request_id", "start_ns"):
        df[col] = df[col].astype("int64")
    for col in ("warmup", "incomplete"):
        df[col] = df[col].astype(bool)
    return df


def _opt_int(v: Any) -> int | None:
    return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else int(v)


def frame_to_records(df: pd.DataFrame) -> list[RequestRecord]:
    """Inverse of :func:`records_to_frame` (used to recompute statistics from stored parquet)."""
    out = []
    for row in df.to_dict("records"):
        toks = [_opt_int(n) for n in row["chunk_tokens"]]
        chunks = list(zip((int(t) for t in row["chunk_t_ns"]), toks))
        out.append(
            RequestRecord(
                request_id=int(row["request_id"]),
                warmup=bool(row["warmup"]),
                start_ns=int(row["start_ns"]),
                scheduled_ns=_opt_int(row["scheduled_ns"]),
                queued_ns=_opt_int(row.get("queued_ns")),  # absent from files written before it
                end_ns=_opt_int(row["end_ns"]),
                chunks=chunks,
                status=_opt_int(row["status"]),
                error_class=row["error_class"] if isinstance(row["error_class"], str) else None,
                error_message=row["error_message"] if isinstance(row["error_message"], str) else None,
                input_tokens=_opt_int(row["input_tokens"]),
                completion_tokens=_opt_int(row["completion_tokens"]),
                incomplete=bool(row["incomplete"]),
            )
        )
    return out


@dataclass(slots=True)
class LoadRun:
    """What one load-generator run produced: the records plus the anchors needed to join them
    with server/NVML samples and to judge the client (target rate for open loop)."""

    records: list[RequestRecord]
    #: ``perf_counter_ns()`` and UTC wall time taken together once, at the start of the run.
    anchor_ns: int
    anchor_at: datetime
    mode: str  # "closed" | "open"
    concurrency: int | None = None
    target_rate: float | None = None
    #: Why the run stopped: "max_requests", "max_duration", "prompts", "stalled", "cancelled",
    #: "saturated" (:mod:`benchflow.saturation`).
    stop_reason: str = ""
    #: Evidence for the stop: for "stalled" ``seconds_since_last_token``, ``in_flight``, ...;
    #: for "cancelled" the caller's ``reason``; for "saturated" the detector's evidence.
    stop_detail: dict[str, Any] = field(default_factory=dict)

    def wall_time(self, t_ns: int) -> datetime:
        """Converts a monotonic timestamp of this run to UTC wall time."""
        return self.anchor_at + pd.Timedelta(t_ns - self.anchor_ns, unit="ns").to_pytimedelta()


@dataclass(slots=True, frozen=True)
class Prompt:
    """One request's input, made by ``benchflow.workload``.

    ``text`` is used as the completion prompt (api=completions) or as a single user message
    (api=chat) unless ``messages`` is given. ``input_tokens`` is the workload's estimate (the
    server's ``usage.prompt_tokens`` wins when sent). ``max_tokens`` is the output length asked for.
    """

    text: str
    input_tokens: int
    max_tokens: int
    messages: tuple[dict[str, Any], ...] | None = None


def error_text(record: RequestRecord) -> str | None:
    """A failed request's error in one short line: the server's own message when its error body
    is JSON (``{"error": {"message": ...}}``, ``{"message": ...}``, ``{"detail": ...}``), prefixed
    with the HTTP status; else the recorded message."""
    msg = record.error_message
    if not msg:
        return None
    text = msg
    if msg.lstrip().startswith("{"):
        try:
            obj = json.loads(msg)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            inner = obj.get("error", obj)
            found = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else inner
            if found:
                text = str(found)
    text = " ".join(text.split())
    if record.status is not None and not 200 <= record.status < 300 and not text.startswith(str(record.status)):
        text = f"{record.status} {text}"
    return text[:300]


def dominant_error(records: list[RequestRecord]) -> dict[str, Any] | None:
    """The most frequent error text among the failed measured requests, with its count
    (``{"message": ..., "count": n, "failed": total failed}``); ``None`` when none failed."""
    texts = Counter(t for r in records
                    if not r.warmup and not r.incomplete and not r.succeeded and (t := error_text(r)))
    if not texts:
        return None
    message, count = texts.most_common(1)[0]
    return {"message": message, "count": count, "failed": sum(texts.values())}


#: Columns :func:`load_cell_frame` puts in front of the requests columns.
CELL_COLUMNS = ["campaign_id", "cell_id", "backend_name", "load_label", "repetition", "cell_status"]


def load_cell_frame(results: Any, campaign_id: str, *, backend: str | None = None, load_label: str | None = None,
                    completed_only: bool = True) -> pd.DataFrame:
    """Every stored request of a campaign as one frame, each row carrying its campaign, cell id,
    backend, load point and repetition (``requests.parquet`` alone does not).

    ``results`` is an opened :class:`benchflow.store.results.Results`. ``backend`` and
    ``load_label`` filter cells; ``completed_only`` skips failed cells. Cells without a stored
    ``requests.parquet`` are skipped. ``benchflow.charts.with_request_metrics`` adds the
    per-request ``ttft_ms``, ``tpot_ms`` and ``e2e_ms`` (this module stays below ``stats``).

    The classic plots from here are short pandas: e.g. a TTFT CDF per backend at c16::

        df = with_request_metrics(load_cell_frame(results, cid, load_label="c16"))
        for name, g in df.groupby("backend_name"):
            plt.ecdf(g["ttft_ms"].dropna(), label=name)
    """
    import io

    from benchflow.store import keys

    frames = []
    for cell in results.store.cells(campaign_id):
        if (backend is not None and cell["backend_name"] != backend) or (
                load_label is not None and cell["load_label"] != load_label) or (
                completed_only and cell.get("status") != "completed"):
            continue
        key = keys.cell_key(campaign_id, cell["cell_id"], keys.REQUESTS)
        if not results.artifacts.exists(key):
            continue
        df = pd.read_parquet(io.BytesIO(results.artifacts.get_bytes(key)))
        for i, (col, value) in enumerate(zip(CELL_COLUMNS, (campaign_id, cell["cell_id"], cell["backend_name"],
                                                            cell["load_label"], cell.get("repetition"),
                                                            cell.get("status")))):
            df.insert(i, col, value)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=CELL_COLUMNS + REQUEST_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def shuffled_cycles(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """``n`` prompts: whole seeded permutations of ``prompts`` one after another (each prompt is used
    once before any is used again)."""
    rng = np.random.default_rng(seed)
    out: list[Prompt] = []
    while len(out) < n:
        out.extend(prompts[int(i)] for i in rng.permutation(len(prompts)))
    return out[:n]
