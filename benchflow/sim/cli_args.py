"""Command-line options shared by ``benchflow sim`` and ``python -m benchflow.sim``.

Imports nothing but argparse and the standard library at module level, because every
``benchflow`` invocation imports the CLI modules. Engine knobs are accepted both as vLLM-style
flags (``--max-num-seqs 64``, ``--enable-chunked-prefill``, as a backend's rendered
``engine_args`` are passed) and as ``--engine-arg max-num-seqs=64`` (repeatable; wins).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchflow.sim.config import SimConfig

#: (flag, type, help) of the knobs that are plain options; dests are the flag names.
_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("--host", str, "address to listen on (default 127.0.0.1)"),
    ("--port", int, "TCP port (default 8000; 0 picks a free one)"),
    ("--model", str, "model name (default benchflow-sim)"),
    ("--served-model-name", str, "name clients use in requests (default: --model)"),
    ("--profile", str, "simulated GPU + model: h100-8b (default), a100-8b, l4-8b, h100-70b-tp4"),
    ("--time-scale", float, "multiplies every step cost (default 1.0; <1 is faster)"),
    ("--seed", int, "seed of the fault knobs (default 0)"),
    ("--startup-delay-s", float, "answer 503 'loading' for this many seconds after start"),
    ("--crash-after", int, "exit with status 1 when request N+1 arrives"),
    ("--stall-after", int, "when request N+1 arrives, every stream stops sending (hangs)"),
    ("--error-rate", float, "fraction of requests answered with HTTP 500 (seeded)"),
    ("--max-num-seqs", int, "most sequences per step (default 256)"),
    ("--max-num-batched-tokens", int, "token budget per step (default 8192, or max(max-model-len, 2048) "
                                      "without chunked prefill)"),
    ("--gpu-memory-utilization", float, "fraction of simulated GPU memory to use (default 0.9)"),
    ("--block-size", int, "tokens per KV-cache block (default 16)"),
    ("--scheduling-policy", str, "fcfs (default) or priority (request field 'priority', lower first)"),
    ("--max-model-len", int, "longest prompt + output (default: the profile's, 8192)"),
    ("--quantization", str, "fp8: fp8 weights (less memory, faster decode steps); default none"),
    ("--kv-cache-dtype", str, "auto (default) or fp8 (fp8_e4m3, fp8_e5m2): half the KV bytes per token"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the simulator's options to ``parser`` (defaults are applied by SimConfig)."""
    for flag, typ, help_text in _OPTIONS:
        metavar = {int: "N", float: "X"}.get(typ, "NAME" if flag != "--host" else "ADDR")
        parser.add_argument(flag, dest=_dest(flag), type=typ, default=None, metavar=metavar, help=help_text)
    parser.add_argument("--enable-chunked-prefill", dest="enable_chunked_prefill", default=None,
                        action=argparse.BooleanOptionalAction, help="split long prefills across steps (default on)")
    parser.add_argument("--enable-prefix-caching", dest="enable_prefix_caching", default=None,
                        action=argparse.BooleanOptionalAction,
                        help="reuse the KV blocks of shared prompt prefixes (default off; vLLM V1's is on)")
    parser.add_argument("--engine-arg", dest="engine_arg", action="append", default=[], metavar="NAME=VALUE",
                        help="an engine knob by its vLLM flag name, e.g. max-num-seqs=64 (repeatable)")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The validated config; SpecError lists every bad option or engine arg."""
    from benchflow.sim.config import load_sim_config, parse_engine_arg_pairs

    options = {_dest(flag): getattr(args, _dest(flag), None) for flag, _, _ in _OPTIONS}
    options["enable_chunked_prefill"] = getattr(args, "enable_chunked_prefill", None)
    options["enable_prefix_caching"] = getattr(args, "enable_prefix_caching", None)
    return load_sim_config(options, parse_engine_arg_pairs(args.engine_arg))


def run(args: argparse.Namespace) -> int:
    """Validates the options and serves until SIGTERM (exit 0). SpecError -> the caller exits 2;
    BackendStartError (the out-of-memory start-up failure) -> the caller exits 1."""
    config = config_from_args(args)
    sim_logger = logging.getLogger("benchflow.sim")
    if sim_logger.getEffectiveLevel() > logging.INFO:
        sim_logger.setLevel(logging.INFO)
    from benchflow.sim.server import run_server

    return run_server(config)
