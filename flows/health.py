"""The fleet health flow (deployment ``health/fleet``): check the GPUs of the worker host it runs on.

Each run checks the host whose worker picked it up, stores the report in the results database
(``gpu_health_reports``), publishes a keyed table artifact ``gpu-health-<host>``, and ends Failed
(and emits ``benchflow.gpu.unhealthy``) when a GPU is unhealthy. The deployment runs on a schedule
from the pool's ``default`` queue, which every benchflow worker polls (see infra/gpu-host.md), so
over time every host reports; run it with ``--job-variable``/``work_queue_name`` to aim at one class.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import State

from flows.states import failed
from tasks.fleet import host_gpu_health, publish_health
from tasks.persist import open_results, persist_health


def _run_name() -> str:
    """``health · <host> · 20261129-1254``: the host the worker runs on, and when."""
    import socket
    from datetime import UTC, datetime

    return f"health · {socket.gethostname()} · {datetime.now(UTC):%Y%m%d-%H%M}"


@flow(name="health", flow_run_name=_run_name, validate_parameters=True)
def fleet_health(min_devices: int = 1, min_free_gib: float = 1.0,
                 allow_foreign_processes: bool = False) -> dict[str, Any] | State:
    """Checks every GPU of this host and stores the report.

    Args:
        min_devices: GPUs the host must have.
        min_free_gib: free memory each GPU must have (GiB).
        allow_foreign_processes: do not fail on compute processes that benchflow did not start.
    """
    report = host_gpu_health(min_devices=min_devices, min_free_gib=min_free_gib,
                             allow_foreign_processes=allow_foreign_processes)
    persist_health(open_results(), report, None)
    publish_health(report)
    summary = {"hostname": report.get("hostname"), "healthy": bool(report.get("healthy")),
               "devices": len(report.get("devices", [])), "fake_nvml": bool(report.get("fake_nvml"))}
    if not report.get("healthy"):
        message = f"GPUs of {report.get('hostname')} unhealthy: " + "; ".join(
            report.get("reasons") or [report.get("error") or "unknown"])
        get_run_logger().error("%s", message)
        return failed(message, summary)
    return summary
