"""Renders the Docker ``containers.create`` arguments that start a serving backend (pure).

The result is a :class:`ContainerPlan`: keyword arguments for docker-py
``client.containers.create(**plan.create_kwargs)`` (and for prefect-docker's
``create_docker_container``, which passes them through), plus what the launcher needs around
them: the image reference, the pull policy and the base URL to probe.

Presets per backend kind (image, tag and command can each be overridden in the spec):

* ``vllm``: ``vllm/vllm-openai``. That image's entrypoint is ``vllm serve``, so the command is
  only its arguments: ``[model, "--port", port, "--host", "0.0.0.0", *engine flags]``.
* ``sglang``: ``lmsysorg/sglang`` (no serving entrypoint), so the whole command
  ``python3 -m sglang.launch_server --model-path M --host 0.0.0.0 --port P --enable-metrics ...``.
* ``sim``: ``benchflow/sim`` (entrypoint ``python -m benchflow.sim``), arguments
  ``--host 0.0.0.0 --port P --model M --engine-arg name=value ...``.

Engine flags use their native names: ``True`` gives a bare flag, ``False``/``None`` are left
out, a list repeats the flag. A user-given ``command`` replaces the image's command (CMD; the
entrypoint stays) and may use the placeholders ``{port}``, ``{host}`` and ``{model}``; a lone
``{engine_args}`` element expands to the engine flags, which are appended when it is absent.

The command is always a list of arguments, never a shell string. Ports are published on
``127.0.0.1`` unless the backend says otherwise; with ``network_mode: host`` nothing is
published and the server binds to the publish host itself. vLLM and SGLang containers get
``ipc_mode: host`` when neither ``shm_size`` nor ``ipc_mode`` is given (PyTorch needs more
shared memory than Docker's 64 MB default). The code reads backend attributes only, so any
object with the :class:`~benchflow.spec.BackendSpec` field names works.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from docker.types import DeviceRequest

from benchflow.redact import REDACTED, is_secret_name, redact_command
from benchflow.errors import SpecError
from benchflow.spec.backends import render_engine_args
from benchflow.launch.commands import ENGINE_ARGS_TOKEN, effective_engine_args, sim_engine_args

MANAGED_LABEL = "benchflow.managed"
CAMPAIGN_LABEL = "benchflow.campaign"
BACKEND_LABEL = "benchflow.backend"
CELL_LABEL = "benchflow.cell"
#: The Prefect flow run (or other run) that started the container; set only when known.
RUN_LABEL = "benchflow.run"
#: Engine args that the preset commands set themselves (a second --port would win and break probing).
MANAGED_FLAGS = frozenset({"port", "host", "model", "model-path", "model_path"})
#: A name is secret when one of its words (split on anything but letters and digits) is one of these.


@dataclass(frozen=True)
class Preset:
    """The defaults of one backend kind."""

    image: str
    tag: str
    container_port: int
    shared_memory: bool  # needs more /dev/shm than Docker's default (PyTorch engines)


PRESETS: dict[str, Preset] = {
    "vllm": Preset("vllm/vllm-openai", "latest", 8000, True),
    "sglang": Preset("lmsysorg/sglang", "latest", 30000, True),
    "sim": Preset("benchflow/sim", "latest", 8000, False),
}


@dataclass(frozen=True)
class ContainerPlan:
    """Everything needed to create, start and reach one backend container."""

    create_kwargs: dict[str, Any]
    image: str
    pull_policy: str
    container_port: int
    #: The port on the publish host (equal to ``container_port`` with host networking).
    host_port: int
    base_url: str

    def redacted(self) -> dict[str, Any]:
        """``create_kwargs`` safe to log: secret env values and secret flag values hidden."""
        return redact_create_kwargs(self.create_kwargs)


def _attr(backend: Any, name: str, default: Any = None) -> Any:
    value = getattr(backend, name, default)
    return default if value is None else value


def _preset(backend: Any) -> Preset | None:
    return PRESETS.get(str(_attr(backend, "kind", "")))


def image_ref(backend: Any) -> str:
    """``repo:tag`` (``repo@sha256:...`` for a digest tag) from ``image``/``tag`` or the kind's
    preset. An image that already carries a tag or digest is used as is unless ``tag`` is given."""
    preset = _preset(backend)
    image = _attr(backend, "image") or (preset.image if preset else None)
    if not image:
        raise SpecError(
            f"backends.{_attr(backend, 'name', '?')}.image: kind {_attr(backend, 'kind')!r} has no "
            "default image; set image (and command)"
        )
    tag = _attr(backend, "tag")
    if "@" in image:
        return image
    if tag and str(tag).startswith("sha256:"):
        return f"{image.rsplit(':', 1)[0] if ':' in image.rsplit('/', 1)[-1] else image}@{tag}"
    if ":" in image.rsplit("/", 1)[-1]:
        if not tag:
            return image
        image = image.rsplit(":", 1)[0]
    return f"{image}:{tag or (preset.tag if preset else 'latest')}"


def native_flags(engine_args: Mapping[str, Any]) -> list[str]:
    """Engine args as native flags (the spec's rendering: true = bare flag, false omitted, a list
    repeats the flag, a mapping is one JSON argument); leading dashes in names are tolerated."""
    return render_engine_args({str(k).lstrip("-"): v for k, v in engine_args.items() if v is not None})


def engine_flags(backend: Any) -> list[str]:
    """The backend's engine args rendered for its kind (``--engine-arg k=v`` for the simulator)."""
    if _attr(backend, "kind") == "sim":
        return sim_engine_args(effective_engine_args(backend))
    engine_args = dict(_attr(backend, "engine_args", {}))
    render = getattr(backend, "render_engine_args", None)
    return list(render()) if callable(render) else native_flags(engine_args)


def preset_args(kind: str, model: str, host: str, port: int) -> list[str]:
    """The kind's container command (arguments to the image's entrypoint), without engine flags."""
    if kind == "vllm":
        return [model, "--port", str(port), "--host", host]
    if kind == "sglang":
        return ["python3", "-m", "sglang.launch_server", "--model-path", model,
                "--host", host, "--port", str(port), "--enable-metrics"]
    if kind == "sim":
        return ["--host", host, "--port", str(port), "--model", model]
    raise SpecError(f"backend kind {kind!r} has no container preset; set image and command")


def container_command(backend: Any, model: str, host: str, port: int) -> list[str]:
    """The container's command as a list of arguments, with the engine flags in place."""
    flags = engine_flags(backend)
    command = _attr(backend, "command")
    if not command:
        clash = sorted(MANAGED_FLAGS & set(_attr(backend, "engine_args", {})))
        if clash:
            raise SpecError([
                f"backends.{_attr(backend, 'name', '?')}.engine_args.{name}: set by benchflow "
                "(use the backend's port/model fields, or give a full command)" for name in clash
            ])
        return preset_args(str(_attr(backend, "kind")), model, host, port) + flags
    values = {"port": str(port), "host": host, "model": model}
    argv: list[str] = []
    for part in command:
        if part == ENGINE_ARGS_TOKEN:
            argv += flags
            continue
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        argv.append(part)
    if ENGINE_ARGS_TOKEN not in command:
        argv += flags
    return argv


def device_requests(gpus: Any) -> list[DeviceRequest]:
    """NVIDIA device requests: ``"all"`` (count -1), a count, or a list of device ids/UUIDs.
    ``None``, ``0`` and ``[]`` request no GPU."""
    if gpus is None or gpus == 0 or gpus == []:
        return []
    if isinstance(gpus, bool):
        raise SpecError(f"gpus: expected 'all', a count or a list of device ids, got {gpus!r}")
    if gpus == "all":
        return [DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])]
    if isinstance(gpus, int) or (isinstance(gpus, str) and gpus.isdigit()):
        if int(gpus) < 0:
            raise SpecError(f"gpus: a GPU count must be positive, got {gpus!r}")
        return [DeviceRequest(driver="nvidia", count=int(gpus), capabilities=[["gpu"]])]
    if isinstance(gpus, (list, tuple)):
        return [DeviceRequest(driver="nvidia", device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]
    raise SpecError(f"gpus: expected 'all', a count or a list of device ids, got {gpus!r}")


def container_labels(campaign_id: str, backend_name: str, cell_id: str = "", run_id: str = "") -> dict[str, str]:
    """The labels that mark a container as benchflow's (``benchflow cleanup`` finds them)."""
    labels = {
        CAMPAIGN_LABEL: campaign_id,
        BACKEND_LABEL: backend_name,
        CELL_LABEL: cell_id or "",
        MANAGED_LABEL: "true",
    }
    if run_id:
        labels[RUN_LABEL] = run_id
    return labels


def _short_id(value: str, limit: int = 16) -> str:
    """``value`` when it is a short, name-safe id; else a readable prefix plus a hash of the whole."""
    clean = re.sub(r"[^a-zA-Z0-9_.-]+", "", value)
    if clean == value and len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{clean[:8].strip('_.-')}-{digest}" if clean[:8].strip("_.-") else digest


def container_name(campaign_id: str, backend_name: str, cell_id: str = "") -> str:
    """A readable, valid, collision-resistant container name:
    ``benchflow-<backend>-<campaign>[-<cell>]`` (long ids are shortened with a hash)."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", backend_name).strip("-._") or "backend"
    parts = ["benchflow", slug, _short_id(campaign_id) if campaign_id else "adhoc"]
    if cell_id:
        parts.append(_short_id(cell_id, 12))
    return "-".join(parts)


def render_container(
    backend: Any,
    *,
    model: str | None = None,
    campaign_id: str = "",
    cell_id: str = "",
    host_port: int | None = None,
    name: str | None = None,
    run_id: str = "",
) -> ContainerPlan:
    """The full plan for one backend container; see the module docstring for the rules.

    ``model`` defaults to the backend's ``model`` attribute; ``host_port`` (bridge networking
    only) defaults to the container port; ``run_id`` (a flow run id) adds the label
    ``benchflow.run`` so that the run's clean-up hook finds the container.
    """
    model = model or _attr(backend, "model")
    if not model:
        raise SpecError(f"backends.{_attr(backend, 'name', '?')}: no model name to serve")
    preset = _preset(backend)
    port = int(_attr(backend, "port") or (preset.container_port if preset else 8000))
    publish_host = str(_attr(backend, "publish_host", "127.0.0.1"))
    host_network = _attr(backend, "network_mode", "bridge") == "host"
    bind_host = publish_host if host_network else "0.0.0.0"
    backend_name = str(_attr(backend, "name", "backend"))
    kwargs: dict[str, Any] = {
        "image": image_ref(backend),
        "command": container_command(backend, model, bind_host, port),
        "name": name or container_name(campaign_id, backend_name, cell_id),
        "environment": {str(k): str(v) for k, v in dict(_attr(backend, "env", {})).items()},
        "labels": container_labels(campaign_id, backend_name, cell_id, run_id),
        "init": True,
    }
    if host_network:
        kwargs["network_mode"] = "host"
        host_port = port
    else:
        host_port = int(host_port or port)
        kwargs["ports"] = {f"{port}/tcp": (publish_host, host_port)}
    kwargs.update(_resources(backend, preset))
    # probe a wildcard publish address through loopback
    connect_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(publish_host, publish_host)
    if ":" in connect_host:
        connect_host = f"[{connect_host}]"
    return ContainerPlan(
        create_kwargs=kwargs,
        image=kwargs["image"],
        pull_policy=str(_attr(backend, "pull_policy", "if-missing")),
        container_port=port,
        host_port=host_port,
        base_url=f"http://{connect_host}:{host_port}",
    )


def _resources(backend: Any, preset: Preset | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    requests = device_requests(_attr(backend, "gpus"))
    if requests:
        out["device_requests"] = requests
    shm_size, ipc_mode = _attr(backend, "shm_size"), _attr(backend, "ipc_mode")
    if shm_size:
        out["shm_size"] = shm_size
    if ipc_mode:
        out["ipc_mode"] = ipc_mode
    elif not shm_size and preset is not None and preset.shared_memory:
        out["ipc_mode"] = "host"
    return out


def render_create_kwargs(backend: Any, **kwargs: Any) -> dict[str, Any]:
    """Only the ``containers.create`` keyword arguments of :func:`render_container`."""
    return render_container(backend, **kwargs).create_kwargs


def redact_create_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of create kwargs that is safe to log (the original is left unchanged)."""
    out = copy.deepcopy(dict(kwargs))
    env = out.get("environment") or {}
    out["environment"] = {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}
    if isinstance(out.get("command"), list):
        out["command"] = redact_command(out["command"])
    return out
