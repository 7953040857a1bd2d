"""Scrapes a server's Prometheus ``/metrics`` while a benchmark runs.

Parsing (:func:`parse_metrics`, a pure function of text) is kept apart from transport
(:class:`PrometheusScraper`, aiohttp on the event loop). The text is parsed by
``prometheus_client.parser.text_string_to_metric_families``. Histograms and summaries keep
their ``_bucket`` / ``_sum`` / ``_count`` samples as separate metric names, with the ``le`` (or
``quantile``) label as given. Counters appear under their sample name (``..._total``).
``_created`` samples (creation timestamps) are dropped unless asked for.

Example (the cross-check of KV-cache usage against the measured window)::

    scraper = PrometheusScraper.for_endpoint("http://127.0.0.1:8000/v1", interval_s=0.25)
    async with scraper.running():
        run = await run_load(...)
    t_ns, kv = series(scraper.frame(), "vllm:kv_cache_usage_perc")
    window = active_window(t_ns, kv)
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from benchflow.metrics.periodic import PeriodicSampler, PollError
from benchflow.metrics.samples import Row, labels_json

logger = logging.getLogger(__name__)

#: Metric name patterns scraped by default: every vLLM and SGLang metric.
DEFAULT_PATTERNS: tuple[str, ...] = ("vllm:*", "sglang:*")

#: A name pattern: a glob string (``vllm:*``), a string ``"re:<regex>"``, or a compiled regex.
#: Regular expressions must match the whole sample name.
Pattern = str | re.Pattern[str]


def compile_patterns(patterns: Iterable[Pattern]) -> Callable[[str], bool]:
    """A predicate that is true for names matching any of ``patterns``."""
    globs: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for p in patterns:
        if isinstance(p, re.Pattern):
            regexes.append(p)
        elif p.startswith("re:"):
            regexes.append(re.compile(p[3:]))
        else:
            globs.append(p)

    def matches(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in globs) or any(r.fullmatch(name) for r in regexes)

    return matches


def parse_metrics(
    text: str,
    patterns: Iterable[Pattern] | Callable[[str], bool] = DEFAULT_PATTERNS,
    *,
    include_created: bool = False,
    extra_labels: Mapping[str, str] | None = None,
) -> list[Row]:
    """The samples in Prometheus text ``text`` whose names match ``patterns``.

    ``patterns`` may also be a ready predicate (from :func:`compile_patterns`). Returns
    ``(metric, labels_json, value)`` rows in the order of the text. Raises ``ValueError`` when
    the text is not valid Prometheus exposition format. ``extra_labels`` are added to every
    sample's labels (e.g. ``{"replica": "r0"}`` for one replica behind a router).
    """
    from prometheus_client.parser import text_string_to_metric_families

    match = patterns if callable(patterns) else compile_patterns(patterns)
    rows: list[Row] = []
    label_cache: dict[tuple[tuple[str, str], ...], str] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not include_created and s.name.endswith("_created"):
                continue
            if not match(s.name):
                continue
            key = tuple(sorted(s.labels.items()))
            lab = label_cache.get(key)
            if lab is None:
                lab = label_cache[key] = labels_json({**s.labels, **(extra_labels or {})})
            rows.append((s.name, lab, float(s.value)))
    return rows


def metrics_url(base_url: str) -> str:
    """The ``/metrics`` URL of a server given its base URL (``http://h:p`` or ``http://h:p/v1``)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    if not path.endswith("/metrics"):
        path = path + "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class PrometheusScraper(PeriodicSampler):
    """Polls a Prometheus ``/metrics`` URL every ``interval_s`` and keeps the matching samples.

    A failed scrape (connection refused, timeout, HTTP status other than 200, unparsable text)
    is recorded in ``gaps`` and the scraper keeps going.
    """

    def __init__(
        self,
        url: str,
        *,
        interval_s: float = 1.0,
        patterns: Sequence[Pattern] = DEFAULT_PATTERNS,
        source: str = "server",
        timeout_s: float = 5.0,
        include_created: bool = False,
        final_sample: bool = True,
        max_rows: int | None = 5_000_000,
        extra_labels: Mapping[str, str] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        super().__init__(
            source=source,
            interval_s=interval_s,
            final_sample=final_sample,
            stop_timeout_s=timeout_s + 1.0,
            max_rows=max_rows,
        )
        self.url = url
        self.patterns = tuple(patterns)
        self.timeout_s = float(timeout_s)
        self.include_created = include_created
        self.extra_labels = dict(extra_labels or {})
        self._match = compile_patterns(self.patterns)
        self._session = None

    @classmethod
    def for_endpoint(cls, base_url: str, **kwargs: object) -> PrometheusScraper:
        """A scraper for the server behind an OpenAI-compatible base URL."""
        return cls(metrics_url(base_url), **kwargs)  # type: ignore[arg-type]

    async def _open(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=1),
        )

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _poll(self) -> tuple[list[Row], list[str]]:
        import aiohttp

        assert self._session is not None
        try:
            async with self._session.get(self.url) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise PollError(f"GET {self.url}: HTTP {resp.status}")
        except aiohttp.ClientError as e:
            raise PollError(f"GET {self.url}: {type(e).__name__}: {e}") from e
        except TimeoutError as e:
            raise PollError(f"GET {self.url}: timed out after {self.timeout_s}s") from e
        try:
            # Parsing a large exposition takes milliseconds of CPU: keep it off the event loop.
            rows = await asyncio.to_thread(self._parse, body)
        except (ValueError, UnicodeDecodeError) as e:  # the parser raises ValueError subclasses
            raise PollError(f"GET {self.url}: unparsable metrics text: {e}") from e
        return rows, []

    def _parse(self, body: bytes) -> list[Row]:
        return parse_metrics(body.decode("utf-8"), self._match, include_created=self.include_created,
                             extra_labels=self.extra_labels)
