"""``python -m benchflow.sim``: the simulator with light imports (aiohttp, prometheus_client,
pydantic, numpy), and the same options as ``benchflow sim``."""

from __future__ import annotations

import argparse
import logging
import sys

from benchflow.errors import BenchflowError, SpecError
from benchflow.sim.cli_args import add_arguments, run

LOG_FORMAT = "%(levelname)s %(asctime)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` and serves; exit codes: 0 after SIGTERM, 1 start-up failure, 2 bad options."""
    parser = argparse.ArgumentParser(prog="python -m benchflow.sim",
                                     description="vLLM-compatible engine simulator (OpenAI API over HTTP).")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v debug)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        return run(args)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    except BenchflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
