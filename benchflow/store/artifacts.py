"""Artifact stores: raw data, logs and reports, addressed by keys from :mod:`benchflow.store.keys`.

Contract of every :class:`ArtifactStore`:

- ``put_bytes``/``put_file`` return an :class:`ArtifactRef` only after the object is completely
  written and its SHA-256 verified; a failed or partial write leaves nothing under the key
  (local: temp file + ``os.replace``; S3: checksum on upload, ``head_object`` after, delete on
  mismatch) and raises :class:`~benchflow.errors.StorageError`.
- An unreachable store raises :class:`~benchflow.errors.StorageUnavailableError` (transient).
- Keys are relative (``campaigns/<id>/...``); every segment is validated, so nothing escapes the prefix.
- Stores are safe to share between threads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from benchflow.errors import StorageError
from benchflow.store.keys import validate_key, validate_prefix

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


class ArtifactNotFoundError(StorageError):
    """No artifact under that key."""


@dataclass(frozen=True)
class ArtifactRef:
    """A verified, completely written artifact."""

    key: str
    uri: str
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class ArtifactStore(Protocol):
    """Where artifacts live. See the module docstring for the contract."""

    def put_bytes(self, key: str, data: bytes) -> ArtifactRef: ...

    def put_file(self, key: str, path: str | Path) -> ArtifactRef: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def uri(self, key: str) -> str: ...


def sha256_file(path: str | Path) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class LocalArtifactStore:
    """Artifacts in a local folder (the embedded default, ``$BENCHFLOW_HOME/artifacts``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def put_bytes(self, key: str, data: bytes) -> ArtifactRef:
        return self._write(key, lambda fh, digest: _copy_bytes(data, fh, digest))

    def put_file(self, key: str, path: str | Path) -> ArtifactRef:
        def copy(fh: Any, digest: Any) -> int:
            with open(path, "rb") as src:
                return _copy_stream(src, fh, digest)

        return self._write(key, copy)

    def _write(self, key: str, copy: Any) -> ArtifactRef:
        dest = self._path(key)
        tmp_name = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as fh:
                size = copy(fh, digest)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, dest)
            tmp_name = None
        except OSError as e:
            raise StorageError(f"could not write artifact {key!r} under {self.root}: {e}") from e
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
        log.debug("stored artifact %s (%d bytes)", dest, size)
        return ArtifactRef(key=key, uri=dest.as_uri(), sha256=digest.hexdigest(), size_bytes=size)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise ArtifactNotFoundError(f"no artifact {key!r} under {self.root}") from e
        except OSError as e:
            raise StorageError(f"could not read artifact {key!r} under {self.root}: {e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        base = self.root.joinpath(*prefix.split("/")) if prefix else self.root
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith(".tmp-"))


def _copy_bytes(data: bytes, fh: Any, digest: Any) -> int:
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        chunk = view[start : start + _CHUNK]
        fh.write(chunk)
        digest.update(chunk)
    return len(view)


def _copy_stream(src: Any, fh: Any, digest: Any) -> int:
    size = 0
    while chunk := src.read(_CHUNK):
        fh.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    return size
