"""``benchflow health``: checks this host's GPUs through NVML; exit 1 when unhealthy.

For tests and demos without a GPU, ``BENCHFLOW_FAKE_NVML=<scenario>`` (or the hidden
``--fake-nvml SCENARIO``) answers from a FakeNvml scenario instead; the output then says
``FAKE NVML`` in its first line.
"""

from __future__ import annotations

import argparse
import sys



def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "health",
        help="check this host's GPUs (NVML); exit 1 when unhealthy",
        description=(
            "Checks the NVIDIA driver and every GPU: free memory, foreign compute processes, ECC errors, "
            "pending page retirement or row remapping, temperature and throttling. Exit status 0 when "
            "healthy, 1 when not (or when NVML is unavailable)."
        ),
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE ('-' = stdout only)")
    p.add_argument("--min-devices", type=int, default=1, metavar="N", help="GPUs required (default 1)")
    p.add_argument(
        "--min-free-gib", type=float, default=1.0, metavar="X", help="free memory required per GPU (default 1.0)"
    )
    p.add_argument("--devices", metavar="I,J", help="check only these GPU indices (default: all)")
    p.add_argument(
        "--allow-foreign-processes", action="store_true", help="do not fail on other compute processes"
    )
    p.add_argument("--allowed-pid", type=int, action="append", default=[], metavar="PID", help=argparse.SUPPRESS)
    p.add_argument("--fake-nvml", metavar="SCENARIO", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _parse_devices(text: str | None) -> list[int] | None:
    from benchflow.errors import SpecError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpecError(f"--devices: expected comma-separated GPU indices, got {text!r}") from None


def _nvml(args: argparse.Namespace):  # -> NvmlInterface
    from benchflow.metrics.nvml_env import nvml_from_env

    return nvml_from_env(args.fake_nvml)


def run(args: argparse.Namespace) -> int:
    from benchflow.errors import SpecError
    from benchflow.metrics.health import GIB, check_health

    if args.min_devices < 0 or args.min_free_gib < 0:
        raise SpecError("--min-devices and --min-free-gib must be >= 0")
    report = check_health(
        _nvml(args),
        min_devices=args.min_devices,
        devices=_parse_devices(args.devices),
        min_free_memory_bytes=int(args.min_free_gib * GIB),
        allow_foreign_processes=args.allow_foreign_processes,
        allowed_pids=args.allowed_pid,
    )
    if args.json == "-":
        sys.stdout.write(report.to_json() + "\n")
    else:
        print(report.render())
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as f:
                    f.write(report.to_json() + "\n")
            except OSError as e:
                print(f"error: cannot write {args.json}: {e}", file=sys.stderr)
                return 1
    return 0 if report.healthy else 1
