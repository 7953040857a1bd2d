"""``benchflow infra bootstrap``: work pools, queues, per-GPU concurrency limits, variables and blocks.

Idempotent: what exists and matches is left alone, so running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infra", help="set up a Prefect server for benchflow (pools, queues, GPU slots, blocks)",
                       description="Infrastructure commands for a Prefect server that runs benchflow.")
    infra_sub = p.add_subparsers(dest="infra_command", metavar="SUBCOMMAND")
    b = infra_sub.add_parser(
        "bootstrap", help="create work pools, queues, GPU concurrency limits, variables and Secret blocks",
        description="Creates (or updates) the work pools benchflow-gpu (process) and benchflow-docker (docker) "
                    "with queues h100 and a100, one global concurrency limit gpu-<host>-<index> (limit 1) per GPU, "
                    "Prefect Variables, and Secret blocks from environment variables (BENCHFLOW_DATABASE_URL -> "
                    "benchflow-database-url, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, HF_TOKEN). Idempotent.")
    b.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL), e.g. http://127.0.0.1:4200/api")
    b.add_argument("--config", metavar="FILE", help="bootstrap config (see infra/bootstrap.yaml); default: built in")
    b.add_argument("--host", help="host name for this host's GPU slots (default: $BENCHFLOW_GPU_HOST or hostname)")
    b.add_argument("--gpus", type=int, metavar="N", help="GPUs of this host (default: counted by NVML; 0 without one)")
    b.add_argument("--dry-run", action="store_true", help="print what would be created, touch nothing")
    b.set_defaults(func=run_bootstrap)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _local_host(args: argparse.Namespace):  # -> HostConfig
    from benchflow.bootstrap import HostConfig
    from benchflow.errors import SpecError
    from benchflow.gpu_slots import GpuSlotError, LocalGpus, host_name, host_slug

    if args.gpus is not None and args.gpus < 0:
        raise SpecError(["--gpus: must be >= 0"])
    name = host_slug(args.host) if args.host else host_name()
    if args.gpus is not None:
        return HostConfig(name=name, gpus=args.gpus)
    try:
        count = LocalGpus().device_count()
    except GpuSlotError as e:
        print(f"note: {e}; no GPU slots for {name} (pass --gpus N)", file=sys.stderr)
        count = 0
    return HostConfig(name=name, gpus=count)


def _api_url(args: argparse.Namespace) -> str:
    from benchflow.errors import SpecError

    url = args.api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise SpecError(["--api-url: no Prefect server given (pass --api-url or set PREFECT_API_URL); "
                         "bootstrap needs a real server, not the ephemeral one"])
    return url.rstrip("/")


def run_bootstrap(args: argparse.Namespace) -> int:
    from benchflow.bootstrap import build_plan, load_infra_config

    config, base_dir = load_infra_config(args.config)
    plan = build_plan(config, base_dir, local_host=None if config.hosts else _local_host(args))
    if args.dry_run:
        print("\n".join(plan.describe()))
        return 0
    from tasks.infra import apply_with_client

    changes = apply_with_client(_api_url(args), plan)
    for change in changes:
        print(change)
    counts = {a: sum(c.action == a for c in changes) for a in ("created", "updated", "unchanged")}
    print(f"bootstrap: {counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged")
    return 0
