"""Choosing the NVML implementation from the environment: the real one, or a FakeNvml scenario.

This factory sits apart from :mod:`benchflow.metrics.nvml` because it needs both the real NVML
and :mod:`benchflow.testing.fake_nvml`, which itself builds on ``nvml``'s interface.
"""

from __future__ import annotations

import os

from benchflow.errors import SpecError
from benchflow.metrics.nvml import FAKE_NVML_ENV, NvmlInterface, RealNvml
from benchflow.testing.fake_nvml import fake_scenario

__all__ = ["nvml_from_env"]


def nvml_from_env(scenario: str | None = None) -> NvmlInterface:
    """The real NVML, or the FakeNvml ``scenario`` (default: ``$BENCHFLOW_FAKE_NVML``).

    Raises SpecError for an unknown scenario name.
    """
    scenario = scenario or os.environ.get(FAKE_NVML_ENV) or None
    if scenario is None:
        return RealNvml()
    try:
        return fake_scenario(scenario)
    except ValueError as e:
        raise SpecError(f"{FAKE_NVML_ENV}: {e}") from None
