"""Fleet health: check the GPUs of the host this flow run landed on, and say so where people look."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from benchflow.metrics.nvml_env import nvml_from_env
from tasks.artifacts import artifact_key
from tasks.policy import retry_if_transient

UNHEALTHY_EVENT = "benchflow.gpu.unhealthy"


@task(name="host-gpu-health", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient,
      cache_policy=NO_CACHE)
def host_gpu_health(min_devices: int = 1, min_free_gib: float = 1.0,
                    allow_foreign_processes: bool = False) -> dict[str, Any]:
    """Every GPU of this host (never cached: the point is to look now)."""
    from benchflow.metrics.health import GIB, check_health

    report = check_health(nvml_from_env(), min_devices=min_devices, min_free_memory_bytes=int(min_free_gib * GIB),
                          allow_foreign_processes=allow_foreign_processes)
    return report.to_dict()


def publish_health(report: dict[str, Any]) -> None:
    """A table artifact per host (keyed, so the UI keeps each host's history) and, when unhealthy,
    the event ``benchflow.gpu.unhealthy`` on resource ``benchflow.host.<hostname>``."""
    from prefect.artifacts import create_table_artifact
    from prefect.events import emit_event

    host = str(report.get("hostname"))
    rows = [{"gpu": d.get("index"), "uuid": d.get("uuid"), "name": d.get("name"),
             "free_gib": round((d.get("memory_free_bytes") or 0) / 2**30, 1), "temperature_c": d.get("temperature_c"),
             "failed_checks": ", ".join(c["name"] for c in d.get("checks", []) if not c.get("ok")) or "-"}
            for d in report.get("devices", [])]
    verdict = "healthy" if report.get("healthy") else "UNHEALTHY: " + "; ".join(report.get("reasons") or [])
    fake = " (FAKE NVML)" if report.get("fake_nvml") else ""
    create_table_artifact(table=rows or [{"gpu": "-", "failed_checks": report.get("error") or "no GPU"}],
                          key=artifact_key("gpu-health", host), description=f"GPU health of {host}{fake}: {verdict}")
    if not report.get("healthy"):
        emit_event(event=UNHEALTHY_EVENT, resource={"prefect.resource.id": f"benchflow.host.{host}",
                                                    "prefect.resource.name": host},
                   payload={"reasons": report.get("reasons") or [], "fake_nvml": bool(report.get("fake_nvml"))})
    get_run_logger().info("GPU health of %s%s: %s", host, fake, verdict)
