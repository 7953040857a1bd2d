"""Aggregate and compare: pure functions of their inputs, so they are cached on them."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from benchflow import analysis
from benchflow.results_types import AggregateRow, ComparisonRow


@task(name="aggregate", cache_policy=INPUTS + TASK_SOURCE)
def aggregate(rows: list[dict[str, Any]], metrics: list[str], seed: int = 0) -> list[AggregateRow]:
    return analysis.aggregate_rows(rows, metrics, seed=seed)


@task(name="compare", cache_policy=INPUTS + TASK_SOURCE)
def compare(rows: list[dict[str, Any]], metrics: list[str], baseline: str, tolerance: float,
            seed: int = 0) -> list[ComparisonRow]:
    return analysis.comparison_rows(rows, metrics, baseline, tolerance=tolerance, seed=seed)
