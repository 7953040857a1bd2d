"""Simulated GPU + model profiles: memory, model size and per-step costs.

Every constant is documented in ``docs/simulator.md``. The step costs are chosen so that a
profile behaves roughly like the named model on the named GPU in vLLM: a decode step is
dominated by reading the weights (``step_overhead_s``), each running sequence adds a little
(``per_seq_s``), attention adds a cost per KV-cache token read (``per_kv_token_s``, from the
KV bytes per token over the memory bandwidth) and prefill costs ``prefill_s_per_token``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

GIB = 1024**3


class StepCosts(BaseModel):
    """The cost model of one engine step, in seconds (before ``time_scale``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_overhead_s: float = Field(..., ge=0, description="fixed cost of every step (weights read, launch)")
    prefill_s_per_token: float = Field(..., ge=0, description="cost per prefill token scheduled in the step")
    per_seq_s: float = Field(..., ge=0, description="cost per sequence scheduled in the step")
    per_kv_token_s: float = Field(..., ge=0, description="cost per KV-cache token read by attention")

    def duration_s(self, prefill_tokens: int, num_seqs: int, kv_tokens: int) -> float:
        """Duration of a step that schedules these amounts of work."""
        return (
            self.step_overhead_s
            + self.prefill_s_per_token * prefill_tokens
            + self.per_seq_s * num_seqs
            + self.per_kv_token_s * kv_tokens
        )


class GpuProfile(BaseModel):
    """A simulated GPU (or tensor-parallel group) serving one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    gpu_memory_gib: float = Field(..., gt=0, description="total device memory (all GPUs of the TP group)")
    weights_gib: float = Field(..., ge=0, description="model weights")
    activation_base_gib: float = Field(..., ge=0, description="non-torch memory, CUDA graphs, buffers")
    activation_gib_per_1k_batched_tokens: float = Field(
        ..., ge=0, description="peak activation memory per 1024 tokens of max-num-batched-tokens"
    )
    kv_bytes_per_token: int = Field(..., gt=0, description="KV-cache bytes per token (all layers, K and V)")
    max_model_len: int = Field(..., gt=0, description="default max-model-len")
    costs: StepCosts

    def activation_gib(self, max_num_batched_tokens: int) -> float:
        """Memory the profiling forward pass reserves besides weights and KV cache."""
        return self.activation_base_gib + self.activation_gib_per_1k_batched_tokens * max_num_batched_tokens / 1024


# Llama-3-8B: 32 layers x 8 KV heads x 128 head dim x 2 (K, V) x 2 bytes (bf16) = 128 KiB/token.
_KV_8B = 32 * 8 * 128 * 2 * 2
# Llama-3-70B: 80 layers x 8 KV heads x 128 x 2 x 2 = 320 KiB/token.
_KV_70B = 80 * 8 * 128 * 2 * 2

PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile(
            name="h100-8b",
            description="Llama-3-8B (bf16) on one H100 SXM 80GB (3.35 TB/s)",
            gpu_memory_gib=79.6,
            weights_gib=14.96,
            activation_base_gib=0.5,
            activation_gib_per_1k_batched_tokens=0.15,
            kv_bytes_per_token=_KV_8B,
            max_model_len=8192,
            costs=StepCosts(step_overhead_s=0.008, prefill_s_per_token=1.0e-4, per_seq_s=5.0e-5, per_kv_token_s=4.0e-8),
        ),
        GpuProfile(
            name="a100-8b",
            description="Llama-3-8B (bf16) on one A100 SXM 80GB (2.0 TB/s)",
            gpu_memory_gib=79.2,
            weights_gib=14.96,
            activation_base_gib=0.5,
            activation_gib_per_1k_batched_tokens=0.15,
            kv_bytes_per_token=_KV_8B,
            max_model_len=8192,
            costs=StepCosts(step_overhead_s=0.012, prefill_s_per_token=1.6e-4, per_seq_s=7.0e-5, per_kv_token_s=6.5e-8),
        ),
        GpuProfile(
            name="l4-8b",
            description="Llama-3-8B (bf16) on one L4 24GB (0.3 TB/s)",
            gpu_memory_gib=22.0,
            weights_gib=14.96,
            activation_base_gib=0.4,
            activation_gib_per_1k_batched_tokens=0.15,
            kv_bytes_per_token=_KV_8B,
            max_model_len=8192,
            costs=StepCosts(step_overhead_s=0.050, prefill_s_per_token=5.0e-4, per_seq_s=2.0e-4, per_kv_token_s=4.0e-7),
        ),
        GpuProfile(
            name="h100-70b-tp4",
            description="Llama-3-70B (bf16) on four H100 SXM 80GB, tensor parallel 4",
            gpu_memory_gib=4 * 79.6,
            weights_gib=131.4,
            activation_base_gib=2.0,
            activation_gib_per_1k_batched_tokens=0.5,
            kv_bytes_per_token=_KV_70B,
            max_model_len=8192,
            costs=StepCosts(step_overhead_s=0.016, prefill_s_per_token=2.5e-4, per_seq_s=8.0e-5, per_kv_token_s=2.5e-8),
        ),
    )
}

DEFAULT_PROFILE = "h100-8b"


def get_profile(name: str) -> GpuProfile:
    """The profile called ``name``; ``KeyError`` lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
