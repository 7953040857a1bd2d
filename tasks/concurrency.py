"""One benchmark per GPU: hold the GPU's global concurrency slot(s) around a backend's whole life.

``with gpu_slots(backend):`` wraps health gate -> deploy -> cells -> teardown. It takes every
slot ``gpu-<host>-<index>`` of the GPUs the backend uses (see :mod:`benchflow.gpu_slots`) with
``prefect.concurrency.sync.concurrency(names, occupy=1, strict=True, ...)``: a lease that a
background thread renews every ``0.75 x lease`` seconds for as long as the block runs, so cells of
any length keep the GPU; the slots are released on exit (success, failure, cancellation), and a
crashed process's lease expires after ``lease`` seconds. A backend on several GPUs takes all their
slots at once, so it never holds one GPU while waiting for another.

A lease that cannot be renewed (the server lost it, or was unreachable for longer than the lease)
means another campaign may now take the GPU: the block is interrupted (Prefect's
``raise_on_lease_renewal_failure=True``), the backend is torn down by its ``finally``, and
:class:`GpuLeaseLostError` says so, rather than measuring on with a shared GPU.

Settings (environment of the flow run):
- ``BENCHFLOW_GPU_SLOTS``: ``auto`` (default: create a missing limit with limit 1, then acquire
  strictly), ``strict`` (a missing limit is an error: run ``benchflow infra bootstrap``), ``off``;
- ``BENCHFLOW_GPU_SLOT_TIMEOUT_S``: how long to wait for a busy GPU (default 6h);
- ``BENCHFLOW_GPU_SLOT_LEASE_S``: lease duration (default 300; the server accepts 60..86400).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from benchflow.errors import BenchflowError
from benchflow.gpu_slots import GpuSlotError, LocalGpus, backend_slot_names, host_name
from benchflow.spec import BackendSpec
from benchflow.units import parse_duration_s

POLICY_ENV = "BENCHFLOW_GPU_SLOTS"
TIMEOUT_ENV = "BENCHFLOW_GPU_SLOT_TIMEOUT_S"
LEASE_ENV = "BENCHFLOW_GPU_SLOT_LEASE_S"
DEFAULT_TIMEOUT_S = 6 * 3600.0
DEFAULT_LEASE_S = 300.0
_POLICIES = ("auto", "strict", "off")


class GpuLeaseLostError(BenchflowError):
    """The GPU slot lease could not be renewed while the backend ran: the backend was stopped."""


def slot_settings(env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """(policy, timeout_s, lease_s) from the environment."""
    env = dict(os.environ if env is None else env)
    policy = (env.get(POLICY_ENV) or "auto").strip().lower()
    if policy not in _POLICIES:
        raise GpuSlotError(f"{POLICY_ENV}: expected one of {', '.join(_POLICIES)}, got {policy!r}")
    try:
        timeout = parse_duration_s(env.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S, allow_bare=True)
        lease = parse_duration_s(env.get(LEASE_ENV) or DEFAULT_LEASE_S, allow_bare=True)
    except ValueError as e:
        raise GpuSlotError(f"{TIMEOUT_ENV}/{LEASE_ENV}: {e}") from e
    if not 60 <= lease <= 86400:
        raise GpuSlotError(f"{LEASE_ENV}: the lease must be 60s..24h, got {lease:g}s")
    return policy, timeout, lease


def _renewal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("concurrency-lease-renewal-")]


def _renewal_ended(renewers: list[threading.Thread], wait_s: float = 2.0) -> bool:
    """True when this block's lease renewal thread has stopped (it stops only when renewal failed,
    or on exit); False when it still runs, or when it was never seen."""
    if not renewers:
        return False
    for thread in renewers:
        thread.join(wait_s)
    return not any(t.is_alive() for t in renewers)


def _exit_quietly(held: Any) -> None:
    try:
        held.__exit__(None, None, None)  # releases what is left of the lease
    except Exception as e:  # noqa: BLE001 - the lease is gone already
        get_run_logger().debug("releasing a lost lease: %s", e)


def _ensure_limits(names: list[str]) -> None:
    from prefect.client.orchestration import get_client

    from tasks.infra import ensure_gpu_limit

    with get_client(sync_client=True) as client:
        for name in names:
            change = ensure_gpu_limit(client, name)
            if change.action != "unchanged":
                get_run_logger().info("GPU slot %s: %s (%s)", name, change.action, change.detail)


def _holder() -> Any:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder

    run_id = flow_run.id
    return ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None


@contextmanager
def gpu_slots(backend: BackendSpec, *, host: str | None = None, gpus: LocalGpus | None = None) -> Iterator[list[str]]:
    """Holds the slots of every GPU ``backend`` uses on this host; yields their names ([] for none).

    Raises :class:`GpuSlotError` (before the block runs) when the GPUs cannot be resolved, a limit
    is missing under the strict policy, or the slots stay busy past the timeout.
    """
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    logger = get_run_logger()
    policy, timeout_s, lease_s = slot_settings()
    gpus = gpus or LocalGpus()
    names = [] if policy == "off" else backend_slot_names(backend, host or host_name(), gpus.device_count,
                                                          gpus.uuid_to_index)
    if not names:
        yield []
        return
    if policy == "auto":
        _ensure_limits(names)
    logger.info("backend %s: waiting for GPU slot(s) %s (at most %.0fs)", backend.name, ", ".join(names), timeout_s)
    started = time.monotonic()
    renewers_before = _renewal_threads()
    held = concurrency(names, occupy=1, timeout_seconds=timeout_s, lease_duration=lease_s, strict=True,
                       holder=_holder(), raise_on_lease_renewal_failure=True)
    try:
        held.__enter__()
    except TimeoutError as e:
        raise GpuSlotError(f"GPU slot(s) {', '.join(names)} still busy after {timeout_s:.0f}s: another "
                           "benchmark holds the GPU") from e
    except ConcurrencySlotAcquisitionError as e:
        raise GpuSlotError(f"cannot take GPU slot(s) {', '.join(names)}: {e}. Create them with "
                           "`benchflow infra bootstrap` (or set BENCHFLOW_GPU_SLOTS=auto)") from e
    renewers = [t for t in _renewal_threads() if t not in renewers_before]
    logger.info("backend %s: holding GPU slot(s) %s (waited %.1fs; lease %.0fs, renewed while held)",
                backend.name, ", ".join(names), time.monotonic() - started, lease_s)
    try:
        yield names
    except asyncio.CancelledError as e:
        # Prefect's lease watcher injects one (a subclass) when the renewal failed, and its renewal
        # thread then ends; any other cancellation finds the thread still renewing
        if not _renewal_ended(renewers):
            if not held.__exit__(*sys.exc_info()):
                raise
            return
        _exit_quietly(held)
        message = (f"backend {backend.name}: lost the lease on GPU slot(s) {', '.join(names)} (it could not be "
                   "renewed), so another benchmark may take the GPU; the backend was stopped and its remaining "
                   "cells were not measured")
        logger.error("%s", message)
        raise GpuLeaseLostError(message) from e
    except BaseException:
        if not held.__exit__(*sys.exc_info()):
            raise
    else:
        held.__exit__(None, None, None)
    logger.info("backend %s: released GPU slot(s) %s", backend.name, ", ".join(names))
