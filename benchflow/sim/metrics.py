"""The simulator's Prometheus metrics, under vLLM's names and types, in a per-app registry.

Histogram buckets are vLLM's bucket bounds merged with a fine geometric grid (5% apart from
1 ms to 100 s), so that a percentile interpolated within a bucket is off by well under 5%.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401  (re-exported)

_VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                      7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_VLLM_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                     10.0, 20.0, 40.0, 80.0)
_VLLM_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                     120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
FINE_GRID_RATIO = 1.05


def fine_buckets(vllm_buckets: tuple[float, ...], low: float = 0.001, high: float = 100.0) -> list[float]:
    """vLLM's bounds plus a geometric grid (ratio 1.05) between ``low`` and ``high``."""
    grid = set(vllm_buckets)
    b = low
    while b <= high:
        grid.add(float(f"{b:.4g}"))
        b *= FINE_GRID_RATIO
    return sorted(grid)


class SimMetrics:
    """All metrics of one simulator app. Gauges read the engine at scrape time."""

    def __init__(self, model_name: str, *, running: Callable[[], float], waiting: Callable[[], float],
                 kv_usage: Callable[[], float]):
        disable_created_metrics()  # like vLLM: no *_created series (a process-wide switch)
        self.registry = CollectorRegistry(auto_describe=True)
        r, labels = self.registry, ["model_name"]
        gauges = (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage),
            ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (older name). 1 means 100 percent usage.", kv_usage),
        )
        for name, doc, fn in gauges:
            Gauge(name, doc, labels, registry=r).labels(model_name).set_function(fn)
        # prometheus_client appends _total to counters: vllm:prompt_tokens -> vllm:prompt_tokens_total.
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels,
                                     registry=r).labels(model_name)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.",
                                         labels, registry=r).labels(model_name)
        self.num_preemptions = Counter("vllm:num_preemptions", "Cumulative number of preemptions.", labels,
                                       registry=r).labels(model_name)
        self.prefix_cache_queries = Counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", labels,
            registry=r).labels(model_name)
        self.prefix_cache_hits = Counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", labels,
            registry=r).labels(model_name)
        self._success = Counter("vllm:request_success", "Count of successfully processed requests.",
                                [*labels, "finished_reason"], registry=r)
        self._model_name = model_name
        self.ttft = self._histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                                    _VLLM_TTFT_BUCKETS)
        self.itl = self._histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                                   _VLLM_ITL_BUCKETS)
        self.tpot = self._histogram("vllm:request_time_per_output_token_seconds",
                                    "Histogram of time_per_output_token_seconds per request.", _VLLM_ITL_BUCKETS)
        self.e2e = self._histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                                   _VLLM_E2E_BUCKETS)

    def _histogram(self, name: str, doc: str, vllm_buckets: tuple[float, ...]):
        return Histogram(name, doc, ["model_name"], buckets=fine_buckets(vllm_buckets),
                         registry=self.registry).labels(self._model_name)

    def request_finished(self, finished_reason: str) -> None:
        self._success.labels(self._model_name, finished_reason).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
