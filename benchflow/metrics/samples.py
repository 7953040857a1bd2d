"""The tidy sample format shared by every sampler, and helpers to read series out of it.

A sample frame has one row per (time, metric, label set):

====== =============================================================================
t_ns   ``time.perf_counter_ns()`` of the sample (same clock as request records), int64
at     the same instant as a timezone-aware UTC timestamp
source where it came from: ``"server"`` (Prometheus ``/metrics``) or ``"gpu"`` (NVML)
metric the metric name (Prometheus sample name, or an NVML metric with its unit)
labels the label set as a compact JSON object with sorted keys, all values strings
value  float
====== =============================================================================

A *gap* is a poll that failed (or partly failed): ``t_ns``, ``at``, ``source``, ``error``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_COLUMNS = ["t_ns", "at", "source", "metric", "labels", "value"]
GAP_COLUMNS = ["t_ns", "at", "source", "error"]

#: One measured value inside a poll: (metric, labels as JSON, value).
Row = tuple[str, str, float]


def labels_json(labels: Mapping[str, object]) -> str:
    """A label set as the canonical JSON string used in the ``labels`` column."""
    return json.dumps({str(k): str(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both clocks: monotonic ``t_ns`` and UTC ``at``."""

    t_ns: int
    at: datetime

    @classmethod
    def now(cls) -> Instant:
        return cls(time.perf_counter_ns(), datetime.now(timezone.utc))

    @classmethod
    def between(cls, start: Instant, end_ns: int) -> Instant:
        """The midpoint between ``start`` and the monotonic time ``end_ns``."""
        mid = (start.t_ns + end_ns) // 2
        return cls(mid, start.at + timedelta(microseconds=(mid - start.t_ns) / 1000))


@dataclass(frozen=True, slots=True)
class Gap:
    """A poll that failed, or a part of one (one metric of one GPU, say)."""

    t_ns: int
    at: datetime
    source: str
    error: str


@dataclass(slots=True)
class Poll:
    """The rows of one successful (or partly successful) poll, all taken at one instant."""

    when: Instant
    rows: list[Row] = field(default_factory=list)


def polls_to_frame(polls: Sequence[Poll], source: str) -> pd.DataFrame:
    """Polls as a sample frame (columns :data:`SAMPLE_COLUMNS`), ordered by time."""
    import pandas as pd

    t_ns, at, metric, labels, value = [], [], [], [], []
    for poll in polls:
        for m, lab, v in poll.rows:
            t_ns.append(poll.when.t_ns)
            at.append(poll.when.at)
            metric.append(m)
            labels.append(lab)
            value.append(v)
    df = pd.DataFrame({
        "t_ns": pd.Series(t_ns, dtype="int64"),
        "at": pd.Series(pd.to_datetime(at, utc=True), dtype="datetime64[ns, UTC]"),
        "source": pd.Series([source] * len(t_ns), dtype="object"),
        "metric": pd.Series(metric, dtype="object"),
        "labels": pd.Series(labels, dtype="object"),
        "value": pd.Series(value, dtype="float64"),
    })
    return df[SAMPLE_COLUMNS]


def gaps_to_frame(gaps: Sequence[Gap]) -> pd.DataFrame:
    """Gaps as a frame (columns :data:`GAP_COLUMNS`)."""
    import pandas as pd

    df = pd.DataFrame({
        "t_ns": pd.Series([g.t_ns for g in gaps], dtype="int64"),
        "at": pd.Series(pd.to_datetime([g.at for g in gaps], utc=True), dtype="datetime64[ns, UTC]"),
        "source": pd.Series([g.source for g in gaps], dtype="object"),
        "error": pd.Series([g.error for g in gaps], dtype="object"),
    })
    return df[GAP_COLUMNS]


def series(
    frame: pd.DataFrame,
    metric: str,
    labels: Mapping[str, object] | None = None,
    *,
    agg: str = "mean",
) -> tuple[list[int], list[float]]:
    """One metric as ``(t_ns, values)`` sorted by time, ready for ``stats.active_window``.

    ``labels`` keeps only rows whose label set contains these pairs (values compared as
    strings). When several label sets remain at one instant (two engines, two GPUs), they are
    combined with ``agg`` (``mean``, ``sum``, ``max`` or ``min``).
    """
    if agg not in ("mean", "sum", "max", "min"):
        raise ValueError(f"agg must be mean, sum, max or min, not {agg!r}")
    rows = frame[frame["metric"] == metric]
    if labels:
        want = {str(k): str(v) for k, v in labels.items()}
        keep = rows["labels"].map(lambda s: _contains(json.loads(s), want))
        rows = rows[keep.astype(bool)]
    if rows.empty:
        return [], []
    grouped = rows.groupby("t_ns", sort=True)["value"].agg(agg)
    return [int(t) for t in grouped.index], [float(v) for v in grouped.to_numpy()]


def _contains(have: dict[str, str], want: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())
