"""GPU health gate (NVML). Cached per host for a few minutes; retries transient NVML errors only."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from prefect import get_run_logger, task

from tasks.policy import retry_if_transient


def _per_host_key(context: Any, parameters: dict[str, Any]) -> str:
    """Per host and check parameters (and per fake scenario, which stands in for the host's GPUs)."""
    from benchflow.metrics.nvml import FAKE_NVML_ENV

    devices = ",".join(str(d) for d in parameters.get("devices") or []) or "all"
    fake = os.environ.get(FAKE_NVML_ENV, "")
    return (f"gpu-health-{socket.gethostname()}{'-fake-' + fake if fake else ''}-{devices}-{parameters.get('min_devices')}-"
            f"{parameters.get('min_free_gib')}-{parameters.get('allow_foreign_processes')}")


@task(name="gpu-health", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient,
      cache_key_fn=_per_host_key, cache_expiration=timedelta(minutes=5))
def gpu_health(min_devices: int = 1, devices: list[int] | None = None, min_free_gib: float = 0.0,
               allow_foreign_processes: bool = False) -> dict[str, Any]:
    from benchflow.metrics.health import check_health
    from benchflow.metrics.nvml_env import nvml_from_env

    logger = get_run_logger()
    report = check_health(nvml_from_env(), min_devices=min_devices, devices=devices,
                          min_free_memory_bytes=int(min_free_gib * 2**30),
                          allow_foreign_processes=allow_foreign_processes)
    data = report.to_dict()
    if report.healthy:
        logger.info("GPUs healthy on %s: %s", data.get("hostname"),
                    ", ".join(str(d.get("uuid")) for d in data.get("devices", [])))
    else:
        logger.warning("GPU health check failed on %s: %s", data.get("hostname"), "; ".join(data.get("reasons", [])))
    return data
