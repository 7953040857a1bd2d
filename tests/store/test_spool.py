"""The spool keeps pending writes intact on disk, atomically, until they are replayed."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchflow.errors import StorageError
from benchflow.store import rows as r
from benchflow.store.results import Results
from benchflow.store.spool import Spool

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(summary=st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=6),
       blob=st.binary(max_size=2048))
def test_entries_round_trip_exactly(tmp_path: Path, summary: dict, blob: bytes):
    spool = Spool(tmp_path / f"spool-{abs(hash((repr(summary), blob)))}")
    ops = [r.summary_op("camp-1", "cell-0", summary)]
    spool.put("cell", "camp-1", ops, {"campaigns/camp-1/cells/cell-0/requests.parquet": blob}, reason="db down")
    (entry,) = spool.entries()
    assert entry.ops == ops and entry.reason == "db down" and entry.campaign_id == "camp-1"
    (path,) = entry.verified_blobs().values()
    assert path.read_bytes() == blob
    stored = entry.ops[0].args["summary"]
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(stored))  # NaN/inf -> None
    spool.remove(entry)
    assert len(spool) == 0


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def test_a_failed_spool_write_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spool = Spool(tmp_path / "spool")
    src = tmp_path / "requests.parquet"
    src.write_bytes(b"x" * 100)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(StorageError, match="could not spool"):
        spool.put("cell", "camp-1", [], {"campaigns/camp-1/report.md": src}, reason="x")
    assert len(spool) == 0 and spool.entries() == []
    assert list((tmp_path / "spool").iterdir()) == []  # not even a half-built folder


def test_entries_replay_oldest_first(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    for i in range(5):
        spool.put("status", "camp-1", [r.campaign_status_op("camp-1", "running")], {}, reason=str(i))
    assert [e.reason for e in spool.entries()] == ["0", "1", "2", "3", "4"]


def test_only_one_flusher_at_a_time(tmp_path: Path):
    results = Results.from_env({"BENCHFLOW_HOME": str(tmp_path)})
    results.spool.put("status", "camp-1", [r.campaign_status_op("camp-1", "completed")], {}, reason="x")
    with results.spool.lock() as held:
        assert held
        outcome = results.flush()  # another flusher (this lock) is active
    assert outcome.skipped_locked and outcome.remaining == 1 and outcome.replayed == 0
