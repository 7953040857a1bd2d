"""The spool: results that could not be stored wait here, on local disk, until replayed.

One folder per pending write, created atomically (built under a hidden name, then renamed)::

    <spool>/<utc time>-<seq>-<kind>-<digest>/
        entry.json        kind, campaign id, reason, the row writes (ops) and the artifact list
        files/0, files/1  the artifact bytes, checked against their SHA-256 on replay

Entries are replayed oldest first and deleted only after they were stored. Replaying is
idempotent, so a crash between storing and deleting only causes a harmless second replay.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchflow.errors import StorageError
from benchflow.store.artifacts import sha256_file
from benchflow.store.rows import Op, utcnow

log = logging.getLogger(__name__)

FORMAT = 1
_SEQ = itertools.count()


@dataclass(frozen=True)
class SpooledArtifact:
    key: str
    path: Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    kind: str
    campaign_id: str | None
    created_at: str
    reason: str
    ops: list[Op] = field(default_factory=list)
    artifacts: list[SpooledArtifact] = field(default_factory=list)

    def verified_blobs(self) -> dict[str, Path]:
        """key -> spooled file, after checking each file's SHA-256 (raises StorageError if damaged)."""
        out = {}
        for art in self.artifacts:
            sha, size = sha256_file(art.path)
            if sha != art.sha256 or size != art.size_bytes:
                raise StorageError(f"spooled artifact {art.path} for {art.key!r} is damaged (checksum mismatch)")
            out[art.key] = art.path
        return out


class Spool:
    """A folder of pending writes. Safe for several processes: writers never collide, and
    :meth:`lock` lets one flusher run at a time."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    def __len__(self) -> int:
        return len(self._entry_dirs())

    def count(self, campaign_id: str | None = None) -> int:
        """Pending entries: all of them, or those of one campaign."""
        if campaign_id is None:
            return len(self)
        return sum(1 for entry in self.entries() if entry.campaign_id == campaign_id)

    def put(self, kind: str, campaign_id: str | None, ops: Sequence[Op],
            blobs: Mapping[str, bytes | str | Path], reason: str) -> Path:
        """Writes one entry atomically and returns its folder."""
        payload = [op.to_json() for op in ops]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
        for key in sorted(blobs):
            digest.update(key.encode())
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{os.getpid()}-{next(_SEQ):06d}-{kind}-{digest.hexdigest()[:12]}"
        tmp = self.root / f".incoming-{uuid.uuid4().hex}"
        try:
            (tmp / "files").mkdir(parents=True)
            artifacts = [self._write_blob(tmp, i, key, blob) for i, (key, blob) in enumerate(sorted(blobs.items()))]
            entry = {"format": FORMAT, "kind": kind, "campaign_id": campaign_id, "created_at": utcnow().isoformat(),
                     "reason": reason, "ops": payload, "artifacts": artifacts}
            _write_json_synced(tmp / "entry.json", entry)
            os.rename(tmp, self.root / name)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError(f"could not spool {kind} results to {self.root}: {e}") from e
        return self.root / name

    @staticmethod
    def _write_blob(tmp: Path, index: int, key: str, blob: bytes | str | Path) -> dict[str, Any]:
        dest = tmp / "files" / str(index)
        if isinstance(blob, bytes):
            dest.write_bytes(blob)
        else:
            shutil.copyfile(blob, dest)
        with open(dest, "rb") as fh:
            os.fsync(fh.fileno())
        sha, size = sha256_file(dest)
        return {"key": key, "file": f"files/{index}", "sha256": sha, "size_bytes": size}

    def _entry_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def entries(self) -> list[SpoolEntry]:
        """Pending entries, oldest first. Unreadable entries are skipped with a warning."""
        out = []
        for path in self._entry_dirs():
            try:
                out.append(self._read(path))
            except (OSError, ValueError, KeyError) as e:
                log.warning("skipping unreadable spool entry %s: %s", path, e)
        return out

    @staticmethod
    def _read(path: Path) -> SpoolEntry:
        data = json.loads((path / "entry.json").read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown spool format {data.get('format')!r}")
        artifacts = [SpooledArtifact(a["key"], path / a["file"], a["sha256"], int(a["size_bytes"]))
                     for a in data["artifacts"]]
        return SpoolEntry(path=path, kind=data["kind"], campaign_id=data.get("campaign_id"),
                          created_at=data["created_at"], reason=data.get("reason", ""),
                          ops=[Op.from_json(o) for o in data["ops"]], artifacts=artifacts)

    def remove(self, entry: SpoolEntry) -> None:
        """Deletes a replayed entry (rename first, so a half-deleted entry is never replayed)."""
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(entry.path, trash)
        except FileNotFoundError:
            return  # another flusher removed it
        shutil.rmtree(trash, ignore_errors=True)

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """Yields True when this process holds the flush lock, False when another one does."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".flush.lock", "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_json_synced(path: Path, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
