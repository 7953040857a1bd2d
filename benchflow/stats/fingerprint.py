"""A fingerprint of the statistics code: benchflow's version plus a hash of the sources that turn
cell summaries into aggregates, comparisons and regression verdicts.

Cached results of those computations (Prefect's task cache in ``tasks/analysis.py`` and
``tasks/regression.py``) include it in their keys, so a fix to the statistics is never answered
with numbers computed by the old code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def statistics_sources() -> list[Path]:
    """Every module whose code can change an aggregate, a comparison or a regression verdict."""
    return sorted((_PACKAGE / "stats").glob("*.py")) + [_PACKAGE / "analysis.py", _PACKAGE / "regression.py"]


def code_hash(paths: Iterable[Path] | None = None) -> str:
    """``<version>-<sha256 of the sources, 16 hex digits>``; files are read each call (cheap)."""
    from benchflow import __version__

    digest = hashlib.sha256()
    for path in paths if paths is not None else statistics_sources():
        digest.update(Path(path).name.encode() + b"\0")
        digest.update(Path(path).read_bytes() if Path(path).is_file() else b"<missing>")
        digest.update(b"\0")
    return f"{__version__}-{digest.hexdigest()[:16]}"
