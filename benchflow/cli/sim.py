"""``benchflow sim``: runs the engine simulator (see docs/simulator.md)."""

from __future__ import annotations

import argparse

from benchflow.sim.cli_args import add_arguments, run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the vLLM-compatible engine simulator",
        description="An OpenAI-compatible server whose timing comes from a continuous-batching step model. "
        "Engine knobs take vLLM flag names; exits 0 on SIGTERM, 1 when the simulated GPU has no room "
        "for the KV cache, 2 on bad options.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
