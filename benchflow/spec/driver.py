"""``workload.driver``: an external program (an agent benchmark such as tau2-bench) that makes the
load itself, instead of benchflow's load generator. benchflow starts it once per cell with the
cell's concurrency, watches its output for finished tasks, finished steps and errors, and stops it
when it no longer makes progress or loops on the same error (:mod:`benchflow.driver`).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pydantic import Field, field_validator, model_validator

from benchflow.spec.types import Seconds, StrictModel, no_nul

__all__ = ["DriverSpec", "RetryStormSpec", "PLACEHOLDERS", "REQUIRED_PLACEHOLDERS", "DRIVER_COMPARE",
           "driver_load_problems", "driver_compare_defaults"]

#: What the command may name; each is replaced by the cell's value.
PLACEHOLDERS = ("url", "model", "concurrency", "output_dir")
#: A driver that is not told where the server is, or how many agents to run, does not measure the cell.
REQUIRED_PLACEHOLDERS = ("url", "concurrency")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: What a driver campaign compares when its spec names no ``compare.metrics`` (a driver cell has no TTFT).
DRIVER_COMPARE = ("active_tasks_per_min", "active_steps_per_s", "tasks_per_min", "steps_per_s")


class RetryStormSpec(StrictModel):
    """The same error line ``repeats`` times within ``within_s`` seconds: the driver retries forever."""

    repeats: int = Field(..., ge=2, le=1_000_000, description="how many equal error lines make a storm")
    within_s: Seconds = Field(..., gt=0, description="inside how many seconds")


def _regex(value: str) -> str:
    no_nul(value)
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"not a regular expression ({e})") from None
    return value


class DriverSpec(StrictModel):
    """An external driver program, run once per cell in its own process group."""

    command: list[str] | str = Field(
        ..., description="argv list (or one string, split like a shell) with {url}, {model}, {concurrency}, "
                         "{output_dir}; never run through a shell")
    cwd: str | None = Field(None, description="working directory of the driver (default: the current one)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    task_done: str = Field(..., description="regex of a line that marks a finished task")
    step_done: str | None = Field(None, description="regex of a line that marks a finished step (turn)")
    error: str | None = Field(None, description="regex of an error line (counted; feeds retry_storm)")
    expected_tasks: int | None = Field(None, gt=0, le=10_000_000, description="tasks the driver should finish")
    stuck_after_s: Seconds = Field(300.0, gt=0, description="no task or step line for this long: stop, mark stuck")
    retry_storm: RetryStormSpec | None = Field(None, description="stop when one error line repeats too fast")
    stop_grace_s: Seconds = Field(10.0, gt=0, description="SIGTERM to SIGKILL grace when the driver is stopped")

    @field_validator("task_done", "step_done", "error")
    @classmethod
    def _regexes(cls, v: str | None) -> str | None:
        return v if v is None else _regex(v)

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | str) -> list[str] | str:
        argv = _split(v)
        if not argv or not argv[0].strip():
            raise ValueError("is empty; give the driver's program and its arguments")
        for part in argv:
            no_nul(part)
        names = {m for part in argv for m in _PLACEHOLDER.findall(part)}
        unknown = sorted(names - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                             f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        missing = [p for p in REQUIRED_PLACEHOLDERS if p not in names]
        if missing:
            raise ValueError(f"missing placeholder(s) {', '.join('{' + m + '}' for m in missing)}: the driver must "
                             "be told the server URL ({url}) and the cell's concurrency ({concurrency})")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            no_nul(k)
            no_nul(val)
            if not k or "=" in k:
                raise ValueError(f"{k!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _storm_needs_error(self) -> DriverSpec:
        if self.retry_storm is not None and self.error is None:
            raise ValueError("retry_storm needs an error regex (driver.error) to know which lines are errors")
        return self

    def argv(self, *, url: str, model: str, concurrency: int, output_dir: str) -> list[str]:
        """The command with the cell's values in place of its placeholders."""
        values = {"url": url, "model": model, "concurrency": str(concurrency), "output_dir": output_dir}
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], part) for part in _split(self.command)]


def _split(command: list[str] | str) -> list[str]:
    if isinstance(command, str):
        try:
            return shlex.split(command)
        except ValueError as e:
            raise ValueError(f"cannot be split into arguments ({e})") from None
    return list(command)


def driver_load_problems(load_points: list[Any]) -> list[str]:
    """A driver is given a concurrency; any other load point is a problem (one line each)."""
    return [f"load_points[{i}] ({getattr(p, 'label', p)}): a driver workload takes concurrency load points "
            "only (the concurrency is passed to the driver as {concurrency}); rates, sweeps and SLO "
            "capacities need benchflow's own load generator"
            for i, p in enumerate(load_points) if getattr(p, "mode", None) != "closed" or getattr(p, "dynamic", False)]


def driver_compare_defaults(data: Any) -> Any:
    """A copy of the raw campaign ``data`` whose ``compare.metrics`` defaults to :data:`DRIVER_COMPARE`
    when its workload has a driver."""
    if not isinstance(data, dict):
        return data
    workload, compare = data.get("workload"), data.get("compare", {})
    if not (isinstance(workload, dict) and workload.get("driver") is not None and isinstance(compare, dict)):
        return data
    return data if "metrics" in compare else {**data, "compare": {**compare, "metrics": list(DRIVER_COMPARE)}}
