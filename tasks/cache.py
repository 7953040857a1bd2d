"""Cache policy of the statistics tasks: inputs + task source + the statistics code's fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from benchflow.stats import fingerprint


@dataclass
class StatisticsCode(CachePolicy):
    """Keys on benchflow's version and a hash of benchflow.stats, analysis and regression."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return fingerprint.code_hash()


#: What aggregate, compare and check-regressions cache on.
STATISTICS_CACHE = INPUTS + TASK_SOURCE + StatisticsCode()
