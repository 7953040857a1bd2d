"""The ``trace`` load point: a Mooncake-style trace replayed at its recorded send times.

``{trace: {path: FILE, time_scale: 1.0, limit: N}}`` sends the trace's requests (its first
``limit``) at their recorded ``timestamp`` offsets times ``time_scale``, with the prompts of
:func:`benchflow.traces.trace_prompts` (equal ``hash_ids`` blocks give equal token prefixes). It is
one ordinary cell per repetition; its summary holds the send-time error
(:func:`benchflow.trace_replay.trace_summary`). The file is checked strictly when the spec is
validated (:func:`trace_problems`): a missing file, a bad line, a negative or decreasing timestamp
are each one problem line naming the spec path and the file's line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationInfo, field_serializer, field_validator

from benchflow.spec import limits as L
from benchflow.spec.types import StrictModel, no_nul

__all__ = ["TraceSettings", "TraceLoadPoint", "trace_problems"]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,23}$")]


class TraceSettings(StrictModel):
    """Which trace, how fast, how much of it."""

    path: Path = Field(..., description="Mooncake-style JSONL: {timestamp (ms), input_length, output_length, "
                                        "hash_ids} per line, timestamps non-decreasing; relative to the spec's folder")
    time_scale: float = Field(1.0, gt=0, le=1000, description="multiplies every recorded offset (0.5 replays twice "
                                                              "as fast)")
    limit: L.Requests | None = Field(None, gt=0, description="replay only the first N requests")
    max_concurrency: L.Concurrency | None = Field(None, gt=0, description="optional cap on requests in flight")
    block_size: L.Tokens = Field(512, gt=0, description="tokens per hash_ids block")
    name: Name | None = Field(None, description="label of this load point (default trace)")

    @field_validator("path")
    @classmethod
    def _resolve(cls, path: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        no_nul(str(path))
        path = path.expanduser()
        return path if path.is_absolute() else (Path(base) if base else Path.cwd()) / path

    @field_serializer("path")
    def _as_text(self, path: Path) -> str:
        return str(path)  # a cell's load point is stored as JSON


class TraceLoadPoint(StrictModel):
    """``{trace: {path: FILE, ...}}``: open loop at a recorded trace's send times. Its cells send
    no warm-up requests and ignore ``max_requests`` (the trace is what is sent); ``max_duration_s``
    still bounds a cell."""

    trace: TraceSettings = Field(..., description="the trace and how it is replayed")

    @property
    def mode(self) -> str:
        return "trace"

    @property
    def dynamic(self) -> bool:
        return False

    @property
    def label(self) -> str:
        t = self.trace
        return (t.name or "trace") + (f"-x{t.time_scale:g}" if t.time_scale != 1.0 else "")

    def requests(self) -> list[Any]:
        """The replayed requests (strictly read; :class:`~benchflow.errors.SpecError` if bad)."""
        from benchflow.traces import read_trace_strict

        requests = read_trace_strict(self.trace.path)
        return requests[:self.trace.limit] if self.trace.limit else requests

    def describe(self) -> str:
        """One line for ``benchflow validate``: how many requests over how long."""
        reqs = self.requests()
        span_s = (reqs[-1].timestamp_ms - reqs[0].timestamp_ms) * self.trace.time_scale / 1e3
        rate = f", mean {(len(reqs) - 1) / span_s:.3g} req/s" if span_s > 0 else ""
        return (f"{self.label}: trace {self.trace.path.name}, {len(reqs)} requests over {span_s:.3g} s "
                f"(time scale {self.trace.time_scale:g}{rate})")


def trace_problems(where: str, lp: TraceLoadPoint, base_dir: Path | None) -> list[str]:
    """The problems of a trace load point's file, one line each, prefixed with ``where`` (the
    load point's spec path, e.g. ``workload.load_points[2]``)."""
    from benchflow.errors import SpecError

    path = lp.trace.path
    if not path.is_file():
        inside = base_dir is not None and path.is_relative_to(base_dir)
        hint = " (a relative path is resolved against the spec's folder)" if inside else ""
        what = "not a regular file" if path.exists() else "file not found"
        return [f"{where}.trace.path: {what}: {path}{hint}"]
    try:
        reqs = lp.requests()
    except SpecError as e:
        return [f"{where}.trace.path: {path.name}: {p}" for p in e.problems]
    tokens = sum(r.input_length for r in reqs)
    if tokens > L.MAX_PROMPT_TOKENS_PER_CELL:
        return [f"{where}.trace: {len(reqs):,} requests of {tokens:,} input tokens in all is more than "
                f"{L.MAX_PROMPT_TOKENS_PER_CELL:,} prompt tokens per cell (a cell's prompts are built in memory); "
                "set trace.limit"]
    return []
