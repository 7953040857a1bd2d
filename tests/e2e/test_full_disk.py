"""A full disk (issue 11, item 3): the artifact store and the spool share a small tmpfs that is full.

The store must never let ``[Errno 28]`` escape as a traceback, nor lose a cell silently: it raises
:class:`ResultsNotStoredError` with one line naming the cell and the paths, and when only the files
cannot be stored, the cell's row and summary still reach the database.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchflow.errors import ResultsNotStoredError
from benchflow.store import keys
from benchflow.store.artifacts import LocalArtifactStore
from benchflow.store.config import RetryPolicy
from benchflow.store.db import ResultStore
from benchflow.store.results import Results
from benchflow.store.spool import Spool
from tests.conftest import free_port
from tests.store import factories as f

CID = "disk-1"
FAST_RETRY = RetryPolicy(attempts=2, initial_delay_s=0.01, max_delay_s=0.01)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root, or CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> None:
    """Fills the file system to the last byte."""
    for name, size in (("filler", 4096), ("filler-tail", 1)):  # whole blocks, then the last bytes
        with open(mnt / name, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


def _results(url: str, mnt: Path) -> Results:
    store = ResultStore(url)
    return Results(store, LocalArtifactStore(mnt / "artifacts"), Spool(mnt / "spool"), retry=FAST_RETRY,
                   write_timeout_s=30)


def _cell(results: Results, i: int):
    return results.persist_cell(CID, f.cell(f"cell-{i}", repetition=i, position=i), f.summary(40.0 + i),
                                artifacts={keys.REQUESTS: os.urandom(64 * 1024), "backend.log": b"log " * 1000})


def test_full_disk_keeps_the_cell_row_and_names_the_lost_files(tmpfs: Path, tmp_path: Path):
    results = _results(f"sqlite:///{tmp_path / 'results.db'}", tmpfs)  # the database is not on the tmpfs
    results.store.upgrade()
    assert results.persist_campaign(CID, name="disk", spec=f.spec(), spec_hash="h1").stored
    assert _cell(results, 0).stored
    _fill(tmpfs)

    with pytest.raises(ResultsNotStoredError) as caught:
        _cell(results, 1)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 2000, message
    assert "cell cell-1 of campaign disk-1" in message
    assert "requests.parquet" in message and "summary.json" in message
    assert str(tmpfs / "spool") in message and "No space left on device" in message
    assert "row and summary are in the database" in message

    cells = {c["cell_id"]: c for c in results.store.cells(CID)}
    assert set(cells) == {"cell-0", "cell-1"}
    assert cells["cell-1"]["status"] == "completed"
    # the row does not point at files that were never written
    for uri in cells["cell-1"]["artifact_uris"].values():
        assert Path(uri.removeprefix("file://")).is_file(), uri
    assert {s["cell_id"] for s in results.store.summaries(CID)} == {"cell-0", "cell-1"}
    assert len(results.spool) == 0 and not list((tmpfs / "spool").glob(".incoming-*"))
    results.store.dispose()


def test_full_disk_and_no_database_raise_one_line_naming_the_cell_and_the_spool(tmpfs: Path):
    results = _results(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing", tmpfs)
    _fill(tmpfs)
    with pytest.raises(ResultsNotStoredError) as caught:
        _cell(results, 2)
    message = str(caught.value)
    assert "\n" not in message, message
    assert "cell cell-2 of campaign disk-1 was neither stored nor spooled" in message
    assert str(tmpfs / "spool") in message and "No space left on device" in message
    results.store.dispose()


def test_full_artifact_disk_with_room_in_the_spool_still_spools(tmpfs: Path, tmp_path: Path):
    """Only the artifact disk is full and the spool is elsewhere: the whole cell waits in the spool."""
    store = ResultStore(f"sqlite:///{tmp_path / 'results.db'}")
    store.upgrade()
    results = Results(store, LocalArtifactStore(tmpfs / "artifacts"), Spool(tmp_path / "spool"),
                      retry=FAST_RETRY)
    assert results.persist_campaign(CID, name="disk", spec=f.spec(), spec_hash="h1").stored
    _fill(tmpfs)
    outcome = _cell(results, 3)
    assert outcome.spooled and "No space left on device" in (outcome.error or "")
    assert results.spool.count(CID) == 1
    store.dispose()
