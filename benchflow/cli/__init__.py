"""The ``benchflow`` command line.

Each sub-command lives in its own module in this package and exposes
``register(subparsers)``, which adds a parser and sets ``func`` (a callable taking the parsed
``argparse.Namespace`` and returning an exit code). Modules are discovered automatically.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from benchflow.errors import BenchflowError, SpecError
from benchflow.redact import install_log_redaction, redact_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchflow",
        description="LLM-inference benchmark campaigns, orchestrated by Prefect.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # no log line, on the console or in Prefect's database, shows a secret
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SpecError as e:
        print(redact_text(str(e)), file=sys.stderr)
        return 2
    except BenchflowError as e:
        print(f"error: {redact_text(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entrypoint() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entrypoint()
