"""Summary keys as metrics: re-exported from the leaf module :mod:`benchflow.metric_key` (the spec
validates metric names with it, and the spec may not import :mod:`benchflow.stats`)."""

from benchflow.metric_key import (  # noqa: F401
    HIGHER_IS_BETTER,
    LATENCY_BLOCKS,
    LOWER_IS_BETTER,
    MetricKey,
    higher_is_better,
    is_metric_key,
    metric_value,
)
