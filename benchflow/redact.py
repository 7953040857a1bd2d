"""Secret-looking names and values, hidden before anything is logged or stored.

A name is secret-looking when one of its words is TOKEN, KEY, APIKEY, SECRET, PASSWORD or
PASSWD (``HF_TOKEN``, ``api-key``, ``AWS_SECRET_ACCESS_KEY``); ``max-num-batched-tokens`` is not.

- :func:`redact_command`, :func:`redact_mapping`, :func:`redact_spec`: structured values.
- :func:`redact_text`: free text (log lines, error messages, reports): URL passwords
  (``http://user:***@host``), secret flags (``--api-key ***``, ``--api-key=***``, also inside a
  printed list), ``NAME=value`` and ``"NAME": "value"`` for secret-looking upper-case names, and
  ``Bearer`` tokens.
- :func:`redact_value`: :func:`redact_text` over every string of a JSON-like value (keys kept).
- :class:`RedactingFilter`: a logging filter that redacts each record's final message.
"""

from __future__ import annotations

import re
import logging
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
    return redact_value(out)


# ---- free text ----------------------------------------------------------------------------------

#: scheme://user:password@ -> scheme://user:***@ (the password may not hold / ? # @ or spaces)
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"]*):(?P<pw>[^\s/?#@'\"]+)@")
#: --flag value, --flag=value, and "--flag", "value" (a printed argv list)
_FLAG = re.compile(r"""(?P<flag>(?<![\w-])--?[A-Za-z][\w.-]*)(?P<sep>=|[ \t]+|["']\s*,\s*["'])"""
                   r"""(?P<val>[^\s"',\]\)}]+)""")
#: NAME=value, NAME: value (env-style, upper-case names only, so ordinary prose is left alone). The
#: ``NAME: value`` form is not taken after a dot: ``backends[0].env.HF_TOKEN: looks like a secret`` is a
#: spec path and its message, not an assignment.
_ENV_ASSIGN = re.compile(r"(?P<name>\b[A-Z][A-Z0-9_]*)(?P<sep>=|:[ \t]*)(?P<val>[^\s\"',&;)}\]]+)")
#: "NAME": "value" / 'NAME': 'value' (a printed dict or JSON)
_QUOTED_PAIR = re.compile(r"""(?P<name>["'][A-Za-z][\w.-]*["'])(?P<sep>\s*:\s*)(?P<q>["'])(?P<val>.*?)(?P=q)""")
#: lower-case name=value in a query string or a flag value (api_key=..., token=...)
_QUERY_PARAM = re.compile(r"(?P<name>(?<=[?&;\s])[A-Za-z][\w.-]*|^[A-Za-z][\w.-]*)=(?P<val>[^\s&\"',;)}\]]+)")
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer|basic)\s+(?P<val>[A-Za-z0-9._~+/=-]{8,})")


def _env_assignment(m: re.Match) -> bool:
    """A secret-looking ``NAME=value`` or ``NAME: value``; a spec path's last part followed by its
    message (``...env.HF_TOKEN: looks like a secret``) is not an assignment."""
    after_dot = m.start() > 0 and m.string[m.start() - 1] == "."
    return _secret_word(m["name"]) and not (after_dot and m["sep"].startswith(":"))


def _secret_word(name: str) -> bool:
    """Secret-looking, but not a bare ``key`` (too common in ordinary text and data)."""
    return name.strip("\"'-").lower() != "key" and is_secret_name(name.strip("\"'"))


def redact_text(text: str) -> str:
    """``text`` with URL passwords, secret flag values, secret env values and bearer tokens hidden."""
    if not text:
        return text
    out = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    out = _FLAG.sub(lambda m: f"{m['flag']}{m['sep']}{REDACTED}" if is_secret_name(m["flag"]) else m[0], out)
    out = _ENV_ASSIGN.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}" if _env_assignment(m) else m[0], out)
    out = _QUOTED_PAIR.sub(
        lambda m: f"{m['name']}{m['sep']}{m['q']}{REDACTED}{m['q']}"
        if _secret_word(m["name"]) and m["val"] != REDACTED else m[0], out)
    out = _QUERY_PARAM.sub(lambda m: f"{m['name']}={REDACTED}" if _secret_word(m["name"]) else m[0], out)
    return _BEARER.sub(lambda m: f"{m['kind']} {REDACTED}", out)


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value with :func:`redact_text` applied to every string (keys are kept)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):  # an argv: "--api-key", "X"
            return [redact_text(v) for v in redact_command(value)]
        return [redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_value(v) for v in value)
    return value


def redact_url_password(url: str) -> str:
    """``http://user:pass@host/x`` -> ``http://user:***@host/x`` (other URLs unchanged)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", url)


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is the formatter's to report
        return record
    redacted = redact_text(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    return record


class RedactingFilter(logging.Filter):
    """Redacts each record's message and traceback text, for one handler
    (``handler.addFilter(RedactingFilter())``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def install_log_redaction() -> None:
    """Redacts every log record of this process as it is created, whatever handler then prints,
    files or ships it (the console, Prefect's API log handler, ...). Idempotent.

    Installed through :func:`logging.setLogRecordFactory`, so it covers handlers configured later.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "benchflow_redacting", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redact_record(factory(*args, **kwargs))

    make_record.benchflow_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
