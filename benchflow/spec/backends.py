"""Backend specs: one serving-engine configuration each, chosen by ``kind`` (a discriminated union).

``BackendSpec`` holds every field; the per-kind subclasses only narrow ``kind`` and ``launcher``
and set the per-kind defaults (vllm/sglang: docker with their official image; sim: a local
process; openai: an endpoint that is already running, reached at ``url``). Code that deploys a
backend can rely on ``isinstance(b, BackendSpec)`` and on the attributes below.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator

from benchflow.spec.types import Seconds, StrictModel, check_json_value, no_nul, sha256_hex

__all__ = [
    "BackendSpec", "VllmBackend", "SglangBackend", "SimBackend", "OpenAIBackend", "Backend",
    "BACKEND_KINDS", "BACKEND_CLASSES", "DOCKER_ONLY_FIELDS", "LAUNCHED_ONLY_FIELDS", "DEFAULT_LAUNCHER",
    "render_engine_args", "RouterSpec", "REPLICA_URLS", "Quantization", "QUANTIZATION_FLAGS",
    "quantization_engine_args", "quantization_problems",
]

BACKEND_KINDS = ("vllm", "sglang", "sim", "openai")
DEFAULT_LAUNCHER = {"vllm": "docker", "sglang": "docker", "sim": "process", "openai": "none"}
#: Fields that only mean something when the backend runs in a container.
DOCKER_ONLY_FIELDS = ("image", "tag", "pull_policy", "shm_size", "ipc_mode", "network_mode", "publish_host")
#: Fields that only mean something when benchflow starts the backend (not for kind openai).
LAUNCHED_ONLY_FIELDS = (*DOCKER_ONLY_FIELDS, "command", "engine_args", "quantization", "env", "gpus", "port", "restart",
                        "ready_timeout_s", "startup_grace_s", "stop_grace_s", "replicas", "router")
#: Operational settings that do not change what is measured; left out of ``content_hash``.
_NOT_HASHED = {"name", "ready_timeout_s", "startup_grace_s", "stop_grace_s", "pull_policy", "gpu_slots"}

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_FLAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SCALAR = (str, int, float)
#: GPUs one backend may ask for: one backend runs on one host.
MAX_GPUS = 64


def _check_flag_name(name: str) -> str:
    if name.startswith("-"):
        raise ValueError(f"write the flag name without leading dashes: {name.lstrip('-')!r}")
    if not _FLAG_RE.match(name):
        raise ValueError(f"not a valid flag name: {name!r}")
    return name


def _check_engine_arg(value: Any) -> Any:
    ok_scalar = isinstance(value, (*_SCALAR, bool))
    ok_list = isinstance(value, list) and all(isinstance(v, _SCALAR) and not isinstance(v, bool) for v in value)
    ok_dict = isinstance(value, dict)  # rendered as one JSON argument, e.g. --speculative-config '{...}'
    if not (ok_scalar or ok_list or ok_dict):
        raise ValueError("must be a boolean, number, string, list of numbers/strings, or a mapping (rendered as JSON)")
    return check_json_value(value)


EngineArgValue = Annotated[
    Any,
    AfterValidator(_check_engine_arg),
    WithJsonSchema({"anyOf": [{"type": t} for t in ("boolean", "integer", "number", "string", "array", "object")]}),
]
FlagName = Annotated[str, AfterValidator(_check_flag_name)]
EnvName = Annotated[str, Field(pattern=_ENV_RE)]


def _check_gpus(value: Any) -> Any:
    if value is None or value == "all":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError("a GPU count must be >= 1 (leave gpus out for none)")
        if value > MAX_GPUS:
            raise ValueError(f"a GPU count must be <= {MAX_GPUS} (one backend runs on one host)")
        return value
    if isinstance(value, list) and 0 < len(value) <= MAX_GPUS and all(
        (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_GPUS)
        or (isinstance(v, str) and v and "\x00" not in v) for v in value
    ):
        if len(set(map(str, value))) != len(value):
            raise ValueError("GPU ids must not repeat")
        return value
    raise ValueError('must be "all", a GPU count (>= 1), or a non-empty list of GPU indices/UUIDs')


GpuSelection = Annotated[
    Any,
    AfterValidator(_check_gpus),
    WithJsonSchema(
        {"anyOf": [{"const": "all"}, {"type": "integer", "minimum": 1}, {"type": "array"}, {"type": "null"}]}
    ),
]


def _env_value(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool):
        raise ValueError('write booleans in env as quoted strings ("true", "1")')
    return value


EnvValue = Annotated[str, BeforeValidator(_env_value), AfterValidator(no_nul)]


def _image_name(value: Any) -> Any:
    if isinstance(value, str) and ":" in value.rsplit("/", 1)[-1] or isinstance(value, str) and "@" in value:
        raise ValueError(f"put the tag in 'tag', not in the image name: {value!r}")
    return value


def _tag(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"tag must be a string; YAML read it as the number {value!r}, so quote it (tag: \"0.10\")")
    return value


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError as e:
        raise ValueError(f"not an IP address: {value!r}") from e
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:8000, got {value!r}")
    value = value.rstrip("/")
    if value.endswith("/v1"):
        raise ValueError(f"give the server root without /v1 (benchflow adds /v1/...): {value[:-3]!r}")
    return value


def render_engine_args(engine_args: dict[str, Any]) -> list[str]:
    """Native command-line flags: ``true`` -> bare flag, ``false`` omitted, a list repeats the flag,
    a mapping becomes one JSON argument, anything else ``--name value``."""
    argv: list[str] = []
    for name, value in engine_args.items():
        flag = f"--{name}"
        if value is True:
            argv.append(flag)
        elif value is False:
            continue
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value, separators=(",", ":"))]
        else:
            argv += [flag, str(value)]
    return argv


#: How the engine-neutral ``quantization`` field renders, per kind: ``{field: {value: native value}}``;
#: the native flag is :data:`QUANTIZATION_ARGS` (``--quantization`` and ``--kv-cache-dtype`` in vLLM,
#: SGLang and the simulator alike). ``weights: none`` and ``kv_cache: auto`` render nothing (the
#: engine's default: the checkpoint's own dtype). A value missing for a kind is a validation error.
QUANTIZATION_FLAGS: dict[str, dict[str, dict[str, str]]] = {
    # vLLM: --quantization {fp8,awq,gptq,...}; --kv-cache-dtype {auto,fp8,fp8_e4m3,fp8_e5m2}.
    "vllm": {"weights": {"fp8": "fp8", "awq": "awq", "gptq": "gptq"}, "kv_cache": {"fp8": "fp8"}},
    # SGLang: --quantization {fp8,awq,gptq,w8a8_int8,...}; --kv-cache-dtype {auto,fp8_e5m2,fp8_e4m3,...}
    # (no plain "fp8"; e4m3 is what vLLM's "fp8" means).
    "sglang": {"weights": {"fp8": "fp8", "int8": "w8a8_int8", "awq": "awq", "gptq": "gptq"},
               "kv_cache": {"fp8": "fp8_e4m3"}},
    # The simulator models fp8 weights and an fp8 KV cache (benchflow.sim.config.kv_cache_plan).
    "sim": {"weights": {"fp8": "fp8"}, "kv_cache": {"fp8": "fp8"}},
}
QUANTIZATION_ARGS = {"weights": "quantization", "kv_cache": "kv-cache-dtype"}
#: Raw engine args that say the same as the ``quantization`` field (``-q`` is vLLM's short form).
_QUANTIZATION_RAW = {"quantization": "weights", "q": "weights", "kv-cache-dtype": "kv_cache"}
_NO_QUANTIZATION = {"weights": "none", "kv_cache": "auto"}
_QUANTIZATION_HINTS = {("vllm", "int8"): " (vLLM has no int8 --quantization method; an int8 W8A8 checkpoint is read "
                                         "as compressed-tensors from its own config: leave weights at none)"}


class Quantization(StrictModel):
    """Engine-neutral quantization, rendered to each engine's native flags (:data:`QUANTIZATION_FLAGS`)."""

    weights: Literal["none", "fp8", "int8", "awq", "gptq"] = Field(
        "none", description="weight quantization: fp8 (online), int8 (SGLang w8a8_int8), awq/gptq (a checkpoint "
        "quantized that way); none: the checkpoint's dtype")
    kv_cache: Literal["auto", "fp8"] = Field("auto", description="KV-cache dtype: auto (the model's) or fp8")


def quantization_problems(kind: str, q: Quantization | None, engine_args: dict[str, Any], where: str) -> list[str]:
    """``quantization`` values ``kind`` does not take, and engine args that set the same thing."""
    if q is None or kind == "openai":
        return []
    problems = []
    table = QUANTIZATION_FLAGS.get(kind, {})
    for name in ("weights", "kv_cache"):
        value = getattr(q, name)
        if value != _NO_QUANTIZATION[name] and value not in table.get(name, {}):
            takes = ", ".join([_NO_QUANTIZATION[name], *table.get(name, {})])
            why = _QUANTIZATION_HINTS.get((kind, value), " (the simulator models only fp8)" if kind == "sim" else "")
            problems.append(f"{where}.quantization.{name}: kind {kind} does not take {value!r}{why}; it takes: {takes}")
    for raw in engine_args:
        field = _QUANTIZATION_RAW.get(str(raw).lstrip("-").replace("_", "-"))
        if field is not None:
            problems.append(f"{where}.engine_args.{raw}: also set by quantization.{field}; give it in one place "
                            "(quantization is rendered to the engine's own flags)")
    return problems


def quantization_engine_args(kind: str, q: Quantization | None) -> dict[str, str]:
    """The native engine args of ``q`` for ``kind`` (``{}`` for none/auto); ValueError for a value
    the kind does not take (the spec's validation reports it first)."""
    if q is None:
        return {}
    out = {}
    for name, flag in QUANTIZATION_ARGS.items():
        value = getattr(q, name)
        if value == _NO_QUANTIZATION[name]:
            continue
        native = QUANTIZATION_FLAGS.get(kind, {}).get(name, {}).get(value)
        if native is None:
            raise ValueError(f"quantization.{name}: kind {kind} does not take {value!r}")
        out[flag] = native
    return out


#: The router command's placeholder for the replicas' URLs: a lone element expands to one argument
#: per replica, inside a longer element they are joined with commas.
REPLICA_URLS = "{replica_urls}"
#: How many replicas one backend may declare.
MAX_REPLICAS = 64


class RouterSpec(StrictModel):
    """A router in front of a backend's replicas: a local process started once they are ready."""

    command: list[Annotated[str, AfterValidator(no_nul)]] = Field(
        ..., min_length=1, max_length=4096,
        description="the router's command; {replica_urls} (required), {port}, {host} and {metrics_port} (a free "
        "port for the router's own metrics listener) are filled in",
    )
    ready_path: str = Field("/health", pattern=r"^/[^\s]*$", description="answers 2xx once the router routes")
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, description="environment variables of the router")
    port: int | None = Field(None, ge=1, le=65535, description="port the router listens on (default: a free one)")

    @model_validator(mode="after")
    def _needs_replica_urls(self) -> "RouterSpec":
        if not any(REPLICA_URLS in part for part in self.command):
            raise ValueError(f"router.command must contain {REPLICA_URLS} (where the replicas' URLs go)")
        return self


class BackendSpec(StrictModel):
    """One serving-engine configuration (the common fields of every kind)."""

    name: str = Field(..., pattern=_NAME_RE, description="unique name in the campaign (letters, digits, . _ -)")
    kind: Literal["vllm", "sglang", "sim", "openai"] = Field(..., description="serving engine")
    launcher: Literal["docker", "process", "none"] = Field("docker", description="how benchflow starts it")
    image: Annotated[str | None, BeforeValidator(_image_name)] = Field(None, description="container image (no tag)")
    tag: Annotated[str, BeforeValidator(_tag)] = Field("latest", min_length=1, description="image tag, or sha256:...")
    command: list[Annotated[str, AfterValidator(no_nul)]] | None = Field(
        None, min_length=1, max_length=4096, description="full command, replacing the default one"
    )
    engine_args: dict[FlagName, EngineArgValue] = Field(default_factory=dict, description="flags by native name")
    quantization: Quantization | None = Field(
        None, description="engine-neutral weights/KV-cache quantization, rendered to the engine's native flags")
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict, description="environment variables"
    )
    gpus: GpuSelection = Field(None, description='"all", a count, or a list of GPU indices/UUIDs')
    port: int | None = Field(None, ge=1, le=65535, description="port the server listens on (default: a free one)")
    ready_timeout_s: Seconds = Field(600.0, gt=0, description="how long to wait for /health and /v1/models")
    startup_grace_s: Seconds = Field(0.0, ge=0, description="pause after ready before the first cell "
                                     "(engines that finish warming up after they answer /health)")
    stop_grace_s: Seconds = Field(10.0, ge=0, description="SIGTERM-to-SIGKILL grace when stopping")
    url: Annotated[str, AfterValidator(_check_url)] | None = Field(None, description="kind openai: the endpoint")
    pull_policy: Literal["if-missing", "always", "never"] = Field("if-missing", description="docker image pulls")
    shm_size: str | None = Field(None, pattern=r"^\d+[bkmgBKMG]?$", description='docker shared memory, e.g. "16g"')
    ipc_mode: str | None = Field(
        None, pattern=r"^(host|private|shareable|none|container:.+)$", description='docker ipc mode, e.g. "host"'
    )
    network_mode: Literal["bridge", "host"] = Field("bridge", description="docker network mode")
    restart: Literal["never", "per_repetition", "per_cell"] = Field("never", description="redeploy between cells")
    publish_host: Annotated[str, AfterValidator(_check_ip)] = Field(
        "127.0.0.1", description="docker: host address the port is published on"
    )

    replicas: int = Field(1, ge=1, le=MAX_REPLICAS, description="engine replicas, each on its own port "
                          "(and its own share of gpus); more than 1 needs a router")
    router: RouterSpec | None = Field(None, description="a router in front of the replicas; the load goes to it")

    gpu_slots: list[Annotated[int, Field(ge=0, lt=MAX_GPUS)]] | None = Field(
        None, min_length=1, max_length=MAX_GPUS, description="GPU indices on this host whose slots (gpu-<host>-<i>) the backend holds "
        "while it runs; default: those of gpus. Lets a sim/openai backend stand in for a GPU job"
    )

    @model_validator(mode="after")
    def _check_replicas(self) -> "BackendSpec":
        if self.replicas > 1 and self.router is None:
            raise ValueError(f"backend {self.name}: replicas: {self.replicas} needs a router (the one URL the load "
                             "generator talks to)")
        if self.router is not None and self.launcher == "none":
            raise ValueError(f"backend {self.name}: a router needs replicas that benchflow starts (launcher none)")
        if self.replicas > 1 and self.port is not None:
            raise ValueError(f"backend {self.name}: with replicas, leave port out (each replica gets a free one); "
                             "set router.port for the router")
        if self.replicas > 1 and self.gpus is not None:
            if not isinstance(self.gpus, list) or len(self.gpus) % self.replicas:
                raise ValueError(f"backend {self.name}: with replicas: {self.replicas}, give gpus as a list of GPU "
                                 f"ids whose length is a multiple of {self.replicas} (split evenly, in order)")
        return self

    def replica_gpus(self) -> list[Any]:
        """Each replica's GPU selection: ``gpus`` split evenly, in order (``gpus`` itself for one replica)."""
        if self.replicas == 1 or self.gpus is None:
            return [self.gpus] * self.replicas
        per = len(self.gpus) // self.replicas
        return [self.gpus[i * per:(i + 1) * per] for i in range(self.replicas)]

    @property
    def needs_gpu(self) -> bool:
        """vLLM and SGLang always need a GPU; other kinds only when ``gpus`` is set."""
        return self.kind in ("vllm", "sglang") or self.gpus is not None

    @property
    def image_ref(self) -> str | None:
        """``image:tag`` (or ``image@sha256:...``), or ``None`` without an image."""
        if self.image is None:
            return None
        return f"{self.image}@{self.tag}" if self.tag.startswith("sha256:") else f"{self.image}:{self.tag}"

    def effective_engine_args(self) -> dict[str, Any]:
        """``engine_args`` plus the native flags of ``quantization`` (what the engine is started with)."""
        if self.quantization is None or self.kind == "openai":
            return dict(self.engine_args)
        return {**self.engine_args, **quantization_engine_args(self.kind, self.quantization)}

    def render_engine_args(self) -> list[str]:
        """``engine_args`` (and ``quantization``) as native flags (see :func:`render_engine_args`)."""
        return render_engine_args(self.effective_engine_args())

    def content_hash(self) -> str:
        """sha256 of what defines this configuration: kind, launcher, image, command, engine args,
        env, GPUs... but not its name and not operational timeouts. Key order does not matter, and
        fields left at their defaults are not hashed, so adding a field to this model later does not
        change the hash of existing configurations."""
        data = self.model_dump(mode="json", exclude=_NOT_HASHED, exclude_defaults=True)
        data["kind"] = self.kind
        return sha256_hex(data)


class VllmBackend(BackendSpec):
    kind: Literal["vllm"] = Field(..., description="vLLM (vllm serve)")
    launcher: Literal["docker", "process"] = Field("docker", description="how benchflow starts it")
    image: Annotated[str, BeforeValidator(_image_name)] = Field("vllm/vllm-openai", description="container image")


class SglangBackend(BackendSpec):
    kind: Literal["sglang"] = Field(..., description="SGLang (sglang.launch_server)")
    launcher: Literal["docker", "process"] = Field("docker", description="how benchflow starts it")
    image: Annotated[str, BeforeValidator(_image_name)] = Field("lmsysorg/sglang", description="container image")


class SimBackend(BackendSpec):
    kind: Literal["sim"] = Field(..., description="benchflow's engine simulator (needs allow_simulated)")
    launcher: Literal["docker", "process"] = Field("process", description="how benchflow starts it")
    image: Annotated[str, BeforeValidator(_image_name)] = Field("benchflow/sim", description="container image")


class OpenAIBackend(BackendSpec):
    kind: Literal["openai"] = Field(..., description="an OpenAI-compatible endpoint that is already running")
    launcher: Literal["none"] = Field("none", description="nothing to start")
    url: Annotated[str, AfterValidator(_check_url)] = Field(..., description="server root, e.g. http://host:8000")


Backend = Annotated[Union[VllmBackend, SglangBackend, SimBackend, OpenAIBackend], Field(discriminator="kind")]

#: The backend model of each kind.
BACKEND_CLASSES: dict[str, type[BackendSpec]] = {
    "vllm": VllmBackend, "sglang": SglangBackend, "sim": SimBackend, "openai": OpenAIBackend,
}
