"""Renders the command line that starts a backend as a local process (the ``process`` launcher).

The command is always a list of arguments, never a shell string. A user-given ``command`` may
use the placeholders ``{port}``, ``{host}`` and ``{model}``; a lone ``{engine_args}`` element
expands to the rendered engine flags, and when it is absent the flags are appended.
"""

from __future__ import annotations

import sys
from typing import Any

ENGINE_ARGS_TOKEN = "{engine_args}"


def sim_engine_args(engine_args: dict[str, Any]) -> list[str]:
    """The simulator takes its knobs as ``--engine-arg name=value`` (``false`` passes through, so
    a default-on knob such as ``enable-chunked-prefill`` can be turned off)."""
    out: list[str] = []
    for name, value in engine_args.items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out += ["--engine-arg", f"{name}={value}"]
    return out


def effective_engine_args(backend: Any) -> dict[str, Any]:
    """The backend's engine args plus the native flags of its ``quantization`` field (a
    backend-like record without that method: its ``engine_args``)."""
    effective = getattr(backend, "effective_engine_args", None)
    return dict(effective()) if callable(effective) else dict(getattr(backend, "engine_args", None) or {})


def preset_command(kind: str, model: str, host: str, port: int) -> list[str]:
    """The default command of a backend kind, without engine flags."""
    if kind == "sim":
        return [sys.executable, "-m", "benchflow.sim", "--host", host, "--port", str(port), "--model", model]
    if kind == "vllm":
        return ["vllm", "serve", model, "--host", host, "--port", str(port)]
    if kind == "sglang":
        return [
            "python3", "-m", "sglang.launch_server", "--model-path", model,
            "--host", host, "--port", str(port), "--enable-metrics",
        ]
    raise ValueError(f"backend kind {kind!r} has no process command")


def render_process_command(backend: Any, model: str, host: str, port: int) -> list[str]:
    """The full argv that starts ``backend`` on ``host:port`` serving ``model``."""
    flags = sim_engine_args(effective_engine_args(backend)) if backend.kind == "sim" else backend.render_engine_args()
    if not backend.command:
        return preset_command(backend.kind, model, host, port) + flags
    values = {"port": str(port), "host": host, "model": model}
    argv: list[str] = []
    for part in backend.command:
        if part == ENGINE_ARGS_TOKEN:
            argv += flags
        else:
            for key, value in values.items():
                part = part.replace("{" + key + "}", value)
            argv.append(part)
    if ENGINE_ARGS_TOKEN not in backend.command:
        argv += flags
    return argv
