"""Realistic rows for the store tests (shapes as the flow and benchflow.stats produce them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)


def spec(model: str = "llama-3-8b", name: str = "nightly-sweep") -> dict[str, Any]:
    return {"name": name, "model": {"name": model, "tokenizer": None},
            "backends": [{"name": "vllm-a", "kind": "vllm"}, {"name": "vllm-b", "kind": "vllm"}],
            "workload": {"dataset": "D(128,128)", "load_points": [{"concurrency": 16}]}}


def backend(name: str = "vllm-a", max_num_seqs: int = 64) -> dict[str, Any]:
    return {"name": name, "kind": "vllm", "launcher": "docker", "image": "vllm/vllm-openai:v0.6.3",
            "image_digest": "sha256:" + "ab" * 32, "engine_args": {"max-num-seqs": max_num_seqs},
            "command": ["vllm", "serve", "m", "--max-num-seqs", str(max_num_seqs)],
            "content_hash": f"hash-{name}-{max_num_seqs}"}


def cell(cell_id: str, *, backend_name: str = "vllm-a", load_label: str = "c16", repetition: int = 0,
         position: int = 0, status: str = "completed", error: str | None = None,
         started_at: datetime = T0) -> dict[str, Any]:
    return {"cell_id": cell_id, "backend_name": backend_name, "load_label": load_label,
            "load_point": {"concurrency": 16}, "repetition": repetition, "position": position, "status": status,
            "started_at": started_at, "finished_at": started_at + timedelta(seconds=60), "window_s": 58.5,
            "host": "gpu-node-1", "gpu_uuids": ["GPU-1234"], "error": error, "invalid_reason": None,
            "attempt": 1}


def latency(base: float) -> dict[str, float]:
    return {"mean": base, "p50": base * 0.9, "p90": base * 1.5, "p95": base * 1.8, "p99": base * 2.5,
            "min": base * 0.3, "max": base * 3.0, "count": 100}


def summary(ttft_ms: float = 40.0, goodput: float = 9.5, invalid: str | None = None) -> dict[str, Any]:
    return {
        "schema_version": 1, "ttft_ms": latency(ttft_ms), "tpot_ms": latency(12.0), "itl_ms": latency(11.0),
        "e2e_ms": latency(1600.0), "ntpot_ms": latency(12.5), "client_lag_ms": latency(0.2),
        "request_throughput": 10.0, "output_throughput": 1280.0, "total_throughput": 2560.0,
        "goodput": goodput, "slo_attainment": goodput / 10.0, "completed": 600, "failed": 3, "incomplete": 1,
        "errors": {"http_5xx": 2, "timeout": 1}, "error_rate": 0.005, "invalid": invalid, "duration_s": 60.0,
        "tokens_estimated": False, "target_rate": None, "achieved_rate": 10.0, "mode": "closed",
        "concurrency": 16, "total_input_tokens": 76800, "total_output_tokens": 76800,
    }


def aggregate(backend_name: str = "vllm-a", metric: str = "ttft_ms.p99") -> dict[str, Any]:
    return {"backend_name": backend_name, "load_label": "c16", "metric": metric, "n": 3, "mean": 100.0,
            "std": 5.0, "ci_low": 95.0, "ci_high": 105.0, "ci_method": "bca", "t_low": 93.0, "t_high": 107.0,
            "values": [95.0, 100.0, 105.0], "confidence": 0.95}


def comparison(metric: str = "ttft_ms.p99") -> dict[str, Any]:
    return {"kind": "backends", "baseline_ref": "vllm-a", "candidate_ref": "vllm-b", "load_label": "c16",
            "metric": metric, "ratio": 0.8, "ci_low": 0.7, "ci_high": 0.9, "verdict": "better",
            "tolerance": 0.02, "baseline_campaign_id": None, "higher_is_better": False}


def health_report(healthy: bool = True) -> dict[str, Any]:
    return {"hostname": "gpu-node-1", "checked_at": "2026-01-10T01:59:00+00:00", "healthy": healthy,
            "driver_version": "550.54.15", "cuda_version": "12.4",
            "gpus": [{"uuid": "GPU-1234", "name": "H100", "memory_free_bytes": 80 * 2**30, "problems": []}]}
