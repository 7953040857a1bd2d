"""The engine simulator: an OpenAI-compatible server timed by a continuous-batching step model.

See ``docs/simulator.md``. Importing this package is cheap (nothing heavy is imported until an
attribute below is used), because ``benchflow.cli.sim`` imports it on every CLI invocation.

Public API:
- :func:`load_sim_config` / :class:`SimConfig` (``benchflow.sim.config``): vLLM-named knobs
- :func:`engine_arg_problems` (``benchflow.sim.config``): check a ``sim`` backend's engine_args
- :class:`Engine` (``benchflow.sim.engine``): the step model, in virtual time
- :func:`run_closed_loop` / :func:`run_open_loop` (``benchflow.sim.virtual``)
- :func:`running_sim` / :func:`run_server` (``benchflow.sim.server``): serve over HTTP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SimConfig": "benchflow.sim.config",
    "load_sim_config": "benchflow.sim.config",
    "engine_arg_problems": "benchflow.sim.config",
    "build_engine_config": "benchflow.sim.config",
    "ENGINE_ARG_NAMES": "benchflow.sim.config",
    "Engine": "benchflow.sim.engine",
    "PROFILES": "benchflow.sim.profiles",
    "VirtualRequest": "benchflow.sim.virtual",
    "run_closed_loop": "benchflow.sim.virtual",
    "run_open_loop": "benchflow.sim.virtual",
    "running_sim": "benchflow.sim.server",
    "run_server": "benchflow.sim.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
