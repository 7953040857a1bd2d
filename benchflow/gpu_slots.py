"""One benchmark per GPU: the names of the per-GPU concurrency slots a backend holds (pure).

Every physical GPU has a global concurrency limit ``gpu-<host>-<index>`` with limit 1 (created
by ``benchflow infra bootstrap``). A backend holds the slots of every GPU it uses from health
check to teardown, so two campaigns never measure on the same GPU at once. Which GPUs:

- ``gpu_slots: [i, ...]`` when the backend sets it (a sim/openai backend standing in for a GPU job);
- else its ``gpus``: a list of indices (UUIDs are mapped to indices), a count ``n`` (GPUs ``0..n-1``,
  as Docker's ``--gpus n`` picks them) or ``"all"`` (every GPU of the host);
- vllm/sglang without ``gpus`` see every GPU of the host, so they take every slot;
- other backends hold no slot.

The host is ``$BENCHFLOW_GPU_HOST`` or the hostname, made lowercase with ``[a-z0-9-]`` only.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

from benchflow.errors import BenchflowError

HOST_ENV = "BENCHFLOW_GPU_HOST"
COUNT_ENV = "BENCHFLOW_GPU_COUNT"


class GpuSlotError(BenchflowError):
    """The GPUs of a backend cannot be resolved, or their slots cannot be taken."""


def host_slug(name: str) -> str:
    """``Node-01.example.com`` -> ``node-01-example-com`` (limit names stay readable and valid)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise GpuSlotError(f"cannot make a slot name from host name {name!r}")
    return slug[:80]


def host_name(env: Mapping[str, str] | None = None) -> str:
    """This host, as it appears in slot names."""
    env = os.environ if env is None else env
    return host_slug(env.get(HOST_ENV) or socket.gethostname())


def slot_name(host: str, index: int | str) -> str:
    return f"gpu-{host_slug(host)}-{index}"


def host_slot_names(host: str, gpu_count: int) -> list[str]:
    """Every slot of a host with ``gpu_count`` GPUs."""
    return [slot_name(host, i) for i in range(gpu_count)]


def _as_index(gpu: int | str, uuid_to_index: Callable[[str], int] | None) -> int:
    if isinstance(gpu, int):
        return gpu
    if gpu.isdigit():
        return int(gpu)
    if uuid_to_index is None:
        raise GpuSlotError(f"cannot map GPU {gpu!r} to an index on this host (no NVML); use GPU indices")
    return uuid_to_index(gpu)


def backend_gpu_indices(backend: Any, device_count: Callable[[], int] | None = None,
                        uuid_to_index: Callable[[str], int] | None = None) -> list[int]:
    """The indices of the GPUs ``backend`` uses on this host (sorted, unique; [] for none).

    ``device_count`` is asked only for ``gpus: all`` (and GPU engines without ``gpus``);
    ``uuid_to_index`` only for GPUs given by UUID.
    """
    explicit = getattr(backend, "gpu_slots", None)
    if explicit:
        return sorted({int(i) for i in explicit})
    gpus = getattr(backend, "gpus", None)
    if gpus is None and getattr(backend, "kind", None) not in ("vllm", "sglang"):
        return []
    if gpus is None or gpus == "all":
        if device_count is None:
            raise GpuSlotError(f"backend {backend.name} uses every GPU of the host, but the GPUs cannot be counted")
        return list(range(device_count()))
    if isinstance(gpus, int):
        return list(range(gpus))
    return sorted({_as_index(g, uuid_to_index) for g in gpus})


def backend_slot_names(backend: Any, host: str | None = None, device_count: Callable[[], int] | None = None,
                       uuid_to_index: Callable[[str], int] | None = None) -> list[str]:
    """The slot names ``backend`` must hold on ``host`` (this host by default)."""
    host = host or host_name()
    return [slot_name(host, i) for i in backend_gpu_indices(backend, device_count, uuid_to_index)]


def env_device_count(env: Mapping[str, str] | None = None) -> int | None:
    """``$BENCHFLOW_GPU_COUNT`` when set (hosts whose GPUs NVML cannot see from here)."""
    env = os.environ if env is None else env
    raw = env.get(COUNT_ENV)
    if not raw:
        return None
    try:
        count = int(raw)
    except ValueError as e:
        raise GpuSlotError(f"{COUNT_ENV}: expected a number of GPUs, got {raw!r}") from e
    if count < 0:
        raise GpuSlotError(f"{COUNT_ENV}: must be >= 0, got {count}")
    return count


def local_gpu_uuids(nvml: Any = None) -> list[str]:
    """UUIDs of this host's GPUs in index order, from NVML (raises NvmlError without a driver)."""
    if nvml is None:
        from benchflow.metrics.nvml import RealNvml

        nvml = RealNvml()
    nvml.init()
    try:
        return [str(nvml.device_uuid(i)) for i in range(nvml.device_count())]
    finally:
        nvml.shutdown()


class LocalGpus:
    """``device_count`` and ``uuid_to_index`` for :func:`backend_slot_names`, asked of NVML once and
    only when needed (``$BENCHFLOW_GPU_COUNT`` answers the count without NVML)."""

    def __init__(self, nvml: Any = None, env: Mapping[str, str] | None = None):
        self._nvml = nvml
        self._env = env
        self._uuids: list[str] | None = None

    def _inventory(self) -> list[str]:
        if self._uuids is None:
            from benchflow.errors import NvmlError

            try:
                self._uuids = local_gpu_uuids(self._nvml)
            except NvmlError as e:
                raise GpuSlotError(f"cannot list this host's GPUs ({e}); set {COUNT_ENV} or give GPU indices") from e
        return self._uuids

    def device_count(self) -> int:
        count = env_device_count(self._env)
        return count if count is not None else len(self._inventory())

    def uuid_to_index(self, uuid: str) -> int:
        uuids = self._inventory()
        for i, known in enumerate(uuids):
            if known == uuid or known.removeprefix("GPU-") == uuid.removeprefix("GPU-"):
                return i
        raise GpuSlotError(f"no GPU with UUID {uuid} on this host (GPUs: {', '.join(uuids) or 'none'})")
