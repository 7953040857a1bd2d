"""Secrets out of artifacts before they are stored or spooled (issue 11, item 4).

Text artifacts (logs, ``report.md``, JSON, ...) go through :func:`benchflow.redact.redact_text`;
Parquet tables have the same done to their string columns (``requests.parquet`` keeps each failed
request's error message, which may quote a URL). An artifact with nothing to hide is returned as
it was, so its bytes and checksum are unchanged.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from benchflow.redact import redact_text

log = logging.getLogger(__name__)

Blob = bytes | str | Path

#: Artifacts that are text.
TEXT_SUFFIXES = (".log", ".md", ".txt", ".json", ".jsonl", ".yaml", ".yml", ".csv", ".out", ".err")


def redacted_blob(key: str, blob: Blob) -> Blob:
    """``blob`` with secrets hidden (the same object when there were none)."""
    name = key.lower()
    try:
        if name.endswith(TEXT_SUFFIXES):
            return _redacted_text(blob)
        if name.endswith(".parquet"):
            return _redacted_parquet(blob)
    except OSError:
        return blob  # unreadable: the store reports it
    return blob


def _read(blob: Blob) -> bytes:
    return blob if isinstance(blob, bytes) else Path(blob).read_bytes()


def _redacted_text(blob: Blob) -> Blob:
    text = _read(blob).decode("utf-8", errors="surrogateescape")
    clean = redact_text(text)
    return blob if clean == text else clean.encode("utf-8", errors="surrogateescape")


def _redacted_parquet(blob: Blob) -> Blob:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(blob) if isinstance(blob, bytes) else str(blob))
    except (pa.ArrowException, ValueError) as e:
        log.debug("not redacting %s: not a readable Parquet file (%s)", "<bytes>" if isinstance(blob, bytes) else blob, e)
        return blob
    changed = False
    for index, field in enumerate(table.schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        values = table.column(index).to_pylist()
        clean = [redact_text(v) if v else v for v in values]
        if clean != values:
            table = table.set_column(index, field, pa.array(clean, type=field.type))
            changed = True
    if not changed:
        return blob
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()
