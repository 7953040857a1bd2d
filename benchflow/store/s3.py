"""S3 (or S3-compatible: MinIO, moto) artifact store, with verified uploads.

Each upload sends its SHA-256 (``ChecksumSHA256``, which S3 checks on receipt) and its MD5
(``ContentMD5``), then ``head_object`` confirms the size and the stored checksum. An object that
fails verification is deleted and the write raises, so a partial object is never reported stored.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

from benchflow.errors import StorageError, StorageUnavailableError
from benchflow.store.artifacts import ArtifactNotFoundError, ArtifactRef
from benchflow.store.keys import validate_key, validate_prefix

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}


def _digests(data: bytes | None = None, path: str | Path | None = None) -> tuple[bytes, bytes, int]:
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    if data is not None:
        sha.update(data)
        md5.update(data)
        return sha.digest(), md5.digest(), len(data)
    with open(path, "rb") as fh:  # type: ignore[arg-type]
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.digest(), md5.digest(), size


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


#: Per request: seconds to connect, seconds without a byte from the server, tries in all. A frozen
#: endpoint accepts the connection (kernel backlog) and then sends nothing: the read timeout ends
#: each try, and ``Results`` bounds the whole write (all tries) and spools after that.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 15
MAX_ATTEMPTS = 2


def make_s3_client(endpoint_url: str | None = None, region_name: str | None = None) -> Any:
    """A boto3 S3 client with short timeouts and few retries (failures then go to the spool)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)


class S3ArtifactStore:
    """Artifacts under ``s3://<bucket>/<prefix>/``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
        region_name: str | None = None,
    ):
        self.bucket = bucket
        self.prefix = validate_prefix(prefix)
        self.endpoint_url = endpoint_url
        self._client = client if client is not None else make_s3_client(endpoint_url, region_name)

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3ArtifactStore({self.bucket!r}, {self.prefix!r}{where})"

    def _object_key(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def put_bytes(self, key: str, data: bytes) -> ArtifactRef:
        sha, md5, size = _digests(data=data)
        return self._put(key, data, sha, md5, size)

    def put_file(self, key: str, path: str | Path) -> ArtifactRef:
        try:
            sha, md5, size = _digests(path=path)
            with open(path, "rb") as body:
                return self._put(key, body, sha, md5, size)
        except OSError as e:
            raise StorageError(f"could not read {path} for artifact {key!r}: {e}") from e

    def _put(self, key: str, body: Any, sha: bytes, md5: bytes, size: int) -> ArtifactRef:
        obj = self._object_key(key)
        with self._translate(f"upload of {self.uri(key)}"):
            self._client.put_object(
                Bucket=self.bucket,
                Key=obj,
                Body=body,
                ContentLength=size,
                ContentMD5=_b64(md5),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(sha),
                Metadata={"sha256": sha.hex()},
            )
            head = self._client.head_object(Bucket=self.bucket, Key=obj, ChecksumMode="ENABLED")
        problem = _verify(head, sha, md5, size)
        if problem:
            self._delete_quietly(obj)
            raise StorageError(f"artifact {self.uri(key)} failed verification ({problem}); deleted it")
        log.debug("stored artifact %s (%d bytes)", self.uri(key), size)
        return ArtifactRef(key=key, uri=self.uri(key), sha256=sha.hex(), size_bytes=size)

    def _delete_quietly(self, obj: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=obj)
        except Exception as e:  # noqa: BLE001 - best effort after a failed verification
            log.warning("could not delete unverified object s3://%s/%s: %s", self.bucket, obj, e)

    def get_bytes(self, key: str) -> bytes:
        with self._translate(f"download of {self.uri(key)}", missing_ok=False):
            resp = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            return resp["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with self._translate(f"lookup of {self.uri(key)}"):
                self._client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except StorageError as e:
            cause = e.__cause__
            if isinstance(cause, ClientError) and _code(cause) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        full = "/".join(p for p in (self.prefix, prefix) if p)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        with self._translate(f"listing of s3://{self.bucket}/{full}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{full}/" if full else ""
            )
            for page in pages:
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def _translate(self, what: str, missing_ok: bool = True) -> Any:
        return _S3Errors(what, missing_ok)


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _verify(head: dict[str, Any], sha: bytes, md5: bytes, size: int) -> str | None:
    """Why the stored object is not what was sent, or None.

    The size must match; a stored SHA-256 must match; and the ETag, when it is the object's MD5
    (single-part upload without KMS or customer-key encryption), must match too. S3 and MinIO
    also verify ``ContentMD5``/``ChecksumSHA256`` on receipt; the ETag check catches stores that
    only echo the checksum they were told.
    """
    if int(head.get("ContentLength", -1)) != size:
        return f"stored size {head.get('ContentLength')} != {size} bytes sent"
    stored_sha = head.get("ChecksumSHA256")
    if stored_sha and stored_sha.split("-")[0] != _b64(sha):
        return "stored SHA-256 differs from the data sent"
    etag = str(head.get("ETag", "")).strip('"')
    etag_is_md5 = (
        etag and "-" not in etag
        and not str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
        and not head.get("SSECustomerAlgorithm")
    )
    if etag_is_md5 and etag != md5.hex():
        return "stored ETag (MD5) differs from the data sent"
    return None


class _S3Errors:
    """Translates botocore errors: connection problems and 5xx -> StorageUnavailableError."""

    def __init__(self, what: str, missing_ok: bool):
        self.what = what
        self.missing_ok = missing_ok

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, StorageError):
            return False
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

        if isinstance(exc, ClientError):
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in {"NoSuchKey", "404"} and not self.missing_ok:
                raise ArtifactNotFoundError(f"{self.what}: no such object") from exc
            if code in _TRANSIENT_CODES or status >= 500:
                raise StorageUnavailableError(f"{self.what}: S3 error {code}") from exc
            raise StorageError(f"{self.what}: S3 error {code}: {exc}") from exc
        if isinstance(exc, (ConnectionError, HTTPClientError)):
            raise StorageUnavailableError(f"{self.what}: S3 endpoint unreachable: {exc}") from exc
        if isinstance(exc, BotoCoreError):
            raise StorageError(f"{self.what}: {exc}") from exc
        return False
