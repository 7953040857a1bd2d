"""Server and GPU samplers and the GPU health check.

- :mod:`benchflow.metrics.prometheus`: ``PrometheusScraper`` (server ``/metrics``) and ``parse_metrics``
- :mod:`benchflow.metrics.gpu`: ``NvmlSampler`` (per-GPU NVML counters)
- :mod:`benchflow.metrics.samples`: the tidy sample frame shared by both, and ``series()``
- :mod:`benchflow.metrics.nvml`: ``NvmlInterface`` (the one NVML port) and ``RealNvml``
- :mod:`benchflow.metrics.health`: ``check_health`` -> ``HealthReport``

Names are imported lazily, so ``import benchflow.metrics`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PrometheusScraper": "prometheus",
    "parse_metrics": "prometheus",
    "metrics_url": "prometheus",
    "NvmlSampler": "gpu",
    "series": "samples",
    "SAMPLE_COLUMNS": "samples",
    "NvmlInterface": "nvml",
    "RealNvml": "nvml",
    "NvmlNotSupportedError": "nvml",
    "check_health": "health",
    "HealthReport": "health",
    "DeviceHealth": "health",
    "Check": "health",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
