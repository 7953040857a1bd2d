"""Simulator configuration: vLLM-named knobs, validation, and the KV-cache plan.

Knobs use vLLM's flag names (``max-num-seqs``); ``max_num_seqs`` is accepted too. A knob
comes from a regular CLI option, from ``--engine-arg name=value`` or from a backend's
``engine_args``; they all go through :func:`load_sim_config`, which reports every problem at
once as a :class:`~benchflow.errors.SpecError`. :func:`build_engine_config` turns a valid
config into the engine's limits and KV-cache size, and fails the way vLLM does at start-up
when the memory does not suffice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from benchflow.errors import BackendStartError, SpecError
from benchflow.sim.profiles import DEFAULT_PROFILE, GIB, PROFILES, GpuProfile, StepCosts

logger = logging.getLogger(__name__)

#: vLLM's start-up failure when weights and activations leave no room for the KV cache.
OOM_MESSAGE = (
    "ValueError: No available memory for the cache blocks. "
    "Try increasing `gpu_memory_utilization` when initializing the engine."
)
BLOCK_SIZES = (1, 8, 16, 32, 64, 128)


def _dash(name: str) -> str:
    return name.replace("_", "-")


class SimConfig(BaseModel):
    """Everything the simulator process needs. Field aliases are the vLLM flag names."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, alias_generator=_dash)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    model: str = Field("benchflow-sim", min_length=1, description="model name")
    served_model_name: str | None = Field(None, min_length=1, description="name clients use (default: model)")
    profile: str = Field(DEFAULT_PROFILE, description="simulated GPU + model profile")
    time_scale: float = Field(1.0, gt=0, description="multiplies every step cost")
    seed: int = Field(0, description="seed of the fault knobs' random draws")
    startup_delay_s: float = Field(0.0, ge=0, description="seconds of 'loading' (503) before serving")
    crash_after: int | None = Field(None, ge=0, description="exit(1) when request N+1 arrives")
    stall_after: int | None = Field(None, ge=0, description="stop sending once request N+1 arrives")
    error_rate: float = Field(0.0, ge=0, le=1, description="fraction of requests answered with 500")
    max_num_seqs: int = Field(256, gt=0, description="most sequences in one step")
    max_num_batched_tokens: int | None = Field(None, gt=0, description="token budget of one step")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="fraction of GPU memory vLLM may use")
    block_size: int = Field(16, description="tokens per KV-cache block")
    enable_chunked_prefill: bool = Field(True, description="split long prefills across steps")
    scheduling_policy: Literal["fcfs", "priority"] = Field("fcfs", description="waiting-queue order")
    max_model_len: int | None = Field(None, gt=0, description="longest prompt + output (default: profile's)")
    enable_prefix_caching: bool = Field(False, description="reuse the KV blocks of shared prompt prefixes")
    quantization: Literal["fp8"] | None = Field(None, description="weight quantization (vLLM's --quantization): "
                                                "fp8 weights take FP8_WEIGHTS_FACTOR of the memory, decode steps are faster")
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(
        "auto", description="KV-cache dtype (vLLM's --kv-cache-dtype): fp8 stores half the bytes per token")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        if v not in PROFILES:
            raise ValueError(f"unknown profile {v!r}; known: {', '.join(sorted(PROFILES))}")
        return v

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, v: int) -> int:
        if v not in BLOCK_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, BLOCK_SIZES))}")
        return v

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def gpu_profile(self) -> GpuProfile:
        return PROFILES[self.profile]

    @property
    def resolved_max_model_len(self) -> int:
        return self.max_model_len or self.gpu_profile.max_model_len

    @property
    def resolved_max_num_batched_tokens(self) -> int:
        """vLLM's default: 8192 with chunked prefill, else max(max-model-len, 2048)."""
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        if self.enable_chunked_prefill:
            return 8192
        return max(self.resolved_max_model_len, 2048)


#: Names accepted as engine args (``--engine-arg``, backend ``engine_args``): every knob but
#: the listening address and the model, which have their own options.
ENGINE_ARG_NAMES: tuple[str, ...] = tuple(
    _dash(n) for n in SimConfig.model_fields if n not in ("host", "port", "model")
)


def parse_engine_arg_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["max-num-seqs=8", ...]`` -> ``{"max-num-seqs": "8"}``; SpecError lists malformed ones."""
    out: dict[str, str] = {}
    problems = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            problems.append(f"--engine-arg {pair!r}: expected NAME=VALUE")
            continue
        out[_dash(name.strip().lstrip("-"))] = value.strip()
    if problems:
        raise SpecError(problems)
    return out


def engine_arg_problems(engine_args: Mapping[str, Any], prefix: str = "engine_args") -> list[str]:
    """Problems with a backend's ``engine_args`` for a ``sim`` backend ("path: message" lines)."""
    try:
        load_sim_config({}, engine_args, prefix=prefix)
    except SpecError as e:
        return e.problems
    return []


def load_sim_config(
    options: Mapping[str, Any], engine_args: Mapping[str, Any] | None = None, *, prefix: str = "engine_args"
) -> SimConfig:
    """Validates regular options plus engine args (engine args win) into a :class:`SimConfig`.

    Raises SpecError listing every problem: unknown engine args and invalid values.
    """
    problems: list[str] = []
    merged: dict[str, Any] = {_dash(k): v for k, v in options.items() if v is not None}
    from_engine_args: set[str] = set()
    for raw_name, value in (engine_args or {}).items():
        name = _dash(str(raw_name).lstrip("-"))
        if name not in ENGINE_ARG_NAMES:
            problems.append(f"{prefix}.{raw_name}: unknown engine arg; known: {', '.join(ENGINE_ARG_NAMES)}")
            continue
        merged[name] = value
        from_engine_args.add(name)
    try:
        config = SimConfig.model_validate(merged)
    except ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "config"
            where = f"{prefix}.{loc}" if loc in from_engine_args else f"--{loc}"
            problems.append(f"{where}: {err['msg']}")
        raise SpecError(problems) from e
    if problems:
        raise SpecError(problems)
    return config


class EngineConfig(BaseModel):
    """What the step model needs: limits, KV-cache size and costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_num_seqs: int = Field(..., gt=0, description="most sequences scheduled in one step")
    max_num_batched_tokens: int = Field(..., gt=0, description="token budget of one step")
    num_gpu_blocks: int = Field(..., gt=0, description="KV-cache capacity in blocks")
    block_size: int = Field(16, gt=0, description="tokens per block")
    enable_chunked_prefill: bool = Field(True, description="split prefills across steps")
    scheduling_policy: Literal["fcfs", "priority"] = Field("fcfs", description="waiting-queue order")
    max_model_len: int = Field(..., gt=0, description="longest prompt + output")
    costs: StepCosts
    time_scale: float = Field(1.0, gt=0, description="multiplies every step duration")
    enable_prefix_caching: bool = Field(False, description="reuse the KV blocks of shared prompt prefixes")
    watermark: float = Field(0.01, ge=0, lt=1, description="share of blocks kept free when admitting")

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size


class KvCachePlan(BaseModel):
    """How the simulated GPU memory is split (logged at start-up like vLLM's profiling)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usable_gib: float = Field(..., description="gpu memory x gpu-memory-utilization")
    weights_gib: float = Field(..., description="model weights")
    activation_gib: float = Field(..., description="activation peak + non-torch memory")
    kv_cache_gib: float = Field(..., description="what is left for the KV cache (may be <= 0)")
    num_gpu_blocks: int = Field(..., description="KV-cache blocks (<= 0 means out of memory)")


#: fp8 weights: the linear layers take half the bytes of bf16, the embeddings and the LM head stay in
#: bf16 (Llama-3-8B: 14.96 GiB -> ~8.5 GiB), so the weights take about this share of their bf16 size.
FP8_WEIGHTS_FACTOR = 0.55
#: fp8 weights: a decode step is dominated by reading the weights (``step_overhead_s``); with half
#: the bytes to read it takes this share of the bf16 step (not half: launch and non-GEMM costs stay).
FP8_STEP_FACTOR = 0.75


def weights_gib(config: SimConfig) -> float:
    """The model weights' memory under ``config``'s quantization."""
    w = config.gpu_profile.weights_gib
    return w * FP8_WEIGHTS_FACTOR if config.quantization == "fp8" else w


def kv_bytes_per_token(config: SimConfig) -> int:
    """KV-cache bytes per token: the profile's (bf16), halved by an fp8 KV cache (1 byte per value).
    Attention's cost per KV token is left as it is (vLLM: fp8 KV mainly doubles the cache's room)."""
    b = config.gpu_profile.kv_bytes_per_token
    return b // 2 if config.kv_cache_dtype.startswith("fp8") else b


def step_costs(config: SimConfig) -> StepCosts:
    """The profile's step costs under ``config``'s quantization."""
    costs = config.gpu_profile.costs
    if config.quantization == "fp8":
        costs = costs.model_copy(update={"step_overhead_s": costs.step_overhead_s * FP8_STEP_FACTOR})
    return costs


def kv_cache_plan(config: SimConfig) -> KvCachePlan:
    """The memory split of ``config``; never raises (see :func:`build_engine_config`)."""
    profile = config.gpu_profile
    usable = profile.gpu_memory_gib * config.gpu_memory_utilization
    activation = profile.activation_gib(config.resolved_max_num_batched_tokens)
    weights = weights_gib(config)
    kv_gib = usable - weights - activation
    block_bytes = config.block_size * kv_bytes_per_token(config)
    blocks = math.floor(kv_gib * GIB / block_bytes) if kv_gib > 0 else 0
    return KvCachePlan(
        usable_gib=usable,
        weights_gib=weights,
        activation_gib=activation,
        kv_cache_gib=kv_gib,
        num_gpu_blocks=blocks,
    )


def build_engine_config(config: SimConfig) -> EngineConfig:
    """The engine's limits for ``config``; BackendStartError with vLLM's message when the
    KV cache gets no memory, or when one max-model-len sequence cannot fit in it."""
    plan = kv_cache_plan(config)
    if plan.num_gpu_blocks <= 0:
        raise BackendStartError(OOM_MESSAGE)
    max_len = config.resolved_max_model_len
    capacity = plan.num_gpu_blocks * config.block_size
    if max_len > capacity:
        raise BackendStartError(
            f"ValueError: The model's max seq len ({max_len}) is larger than the maximum number of "
            f"tokens that can be stored in KV cache ({capacity}). Try increasing "
            "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
        )
    logger.info(
        "# GPU blocks: %d (%.2f GiB KV cache of %.2f GiB usable: weights %.2f GiB, activations %.2f GiB); "
        "maximum concurrency for %d tokens per request: %.2fx",
        plan.num_gpu_blocks, plan.kv_cache_gib, plan.usable_gib, plan.weights_gib, plan.activation_gib,
        max_len, capacity / max_len,
    )
    return EngineConfig(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.resolved_max_num_batched_tokens,
        num_gpu_blocks=plan.num_gpu_blocks,
        block_size=config.block_size,
        enable_chunked_prefill=config.enable_chunked_prefill,
        scheduling_policy=config.scheduling_policy,
        max_model_len=max_len,
        costs=step_costs(config),
        time_scale=config.time_scale,
        enable_prefix_caching=config.enable_prefix_caching,
    )
