"""Secret-looking names and values, hidden before anything is logged or stored.

A name is secret-looking when one of its words is TOKEN, KEY, APIKEY, SECRET, PASSWORD or
PASSWD (``HF_TOKEN``, ``api-key``, ``AWS_SECRET_ACCESS_KEY``); ``max-num-batched-tokens`` is not.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
SECRET_WORDS = frozenset({"TOKEN", "KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD"})


def is_secret_name(name: str) -> bool:
    """``HF_TOKEN``, ``api-key``, ``AWS_SECRET_ACCESS_KEY``: yes; ``max-num-batched-tokens``: no."""
    return any(word in SECRET_WORDS for word in re.split(r"[^A-Za-z0-9]+", name.upper()))


def redact_command(argv: list[str]) -> list[str]:
    """Hides the values of secret-looking flags: ``--api-key X``, ``--api-key=X``, and the
    simulator's ``--engine-arg api-key=X``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, sep, _ = arg.partition("=")
        if sep and is_secret_name(name):
            out.append(f"{name}={REDACTED}")
        elif arg.startswith("-") and is_secret_name(arg):
            out.append(arg)
            hide_next = True
        else:
            out.append(arg)
    return out


def redact_mapping(values: dict[str, Any]) -> dict[str, Any]:
    """A copy whose secret-looking keys have their values hidden."""
    return {k: (REDACTED if is_secret_name(str(k)) else v) for k, v in values.items()}


def redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A JSON spec with every backend's secret-looking ``env`` values, ``engine_args`` values and
    command flags hidden: the form a spec is stored and shown in."""
    out = dict(spec)
    backends = []
    for backend in spec.get("backends") or []:
        b = dict(backend)
        for field in ("env", "engine_args"):
            if isinstance(b.get(field), dict):
                b[field] = redact_mapping(b[field])
        if isinstance(b.get("command"), list):
            b["command"] = redact_command([str(a) for a in b["command"]])
        backends.append(b)
    if "backends" in spec:
        out["backends"] = backends
    return out
