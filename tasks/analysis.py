"""Aggregate and compare: pure functions of their inputs and of the statistics code, so they are
cached on both (tasks/cache.py)."""

from __future__ import annotations

from prefect import task

from benchflow import analysis
from benchflow.results_types import AggregateRow, CellResult, ComparisonRow
from tasks.cache import STATISTICS_CACHE


@task(name="aggregate", cache_policy=STATISTICS_CACHE)
def aggregate(rows: list[CellResult], metrics: list[str], seed: int = 0) -> list[AggregateRow]:
    return analysis.aggregate_rows(rows, metrics, seed=seed)


@task(name="compare", cache_policy=STATISTICS_CACHE)
def compare(rows: list[CellResult], metrics: list[str], baseline: str, tolerance: float,
            seed: int = 0) -> list[ComparisonRow]:
    return analysis.comparison_rows(rows, metrics, baseline, tolerance=tolerance, seed=seed)
