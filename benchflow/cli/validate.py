"""``benchflow validate SPEC [--cells] [--json]``: check a campaign (or tuning) spec without running anything.

Prints a one-line summary (and, with ``--cells``, the expanded cells in run order). A bad spec
prints one line per problem and exits 2. ``--json`` output has secret-looking values redacted
(:func:`benchflow.redact.redact_spec`); its ``content_hash`` is that of the real spec.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a campaign spec and show what it expands to",
        description="Validate a campaign spec (YAML or JSON). Exit code 2 when it is invalid.",
    )
    parser.add_argument("spec", help="path to the campaign spec (YAML or JSON)")
    parser.add_argument("--cells", action="store_true", help="also list the expanded cells in run order")
    parser.add_argument("--json", action="store_true", help="print the validated spec and its cells as JSON")
    parser.set_defaults(func=run)


def _summary(spec) -> str:
    cells = spec.cells()
    loads = ", ".join(lp.label for lp in spec.workload.load_points)
    backends = ", ".join(f"{b.name} ({b.kind})" for b in spec.backends)
    dynamic = [lp for lp in spec.workload.load_points if lp.dynamic]
    static = len(spec.workload.load_points) - len(dynamic)
    if not dynamic:
        count = (f"{len(cells)} cells = {len(spec.backends)} backends [{backends}] x "
                 f"{len(spec.workload.load_points)} load points [{loads}] x {spec.repetitions} repetitions")
    else:  # a sweep or an SLO-capacity search derives its cells at run time
        derived = ", ".join(f"{lp.label} up to {lp.planned_cells(spec.repetitions)}" for lp in dynamic)
        most = len(spec.backends) * (static * spec.repetitions
                                     + sum(lp.planned_cells(spec.repetitions) for lp in dynamic))
        count = (f"up to {most} cells: {len(spec.backends)} backends [{backends}] x ({static} fixed load points "
                 f"x {spec.repetitions} repetitions + cells derived at run time: {derived}); load points [{loads}]")
    return f"{spec.name}: valid; {count}, order {spec.order}; spec hash {spec.content_hash()[:12]}"


def run(args: argparse.Namespace) -> int:
    from benchflow.redact import redact_spec
    from benchflow.spec import load_spec
    from benchflow.spec.reader import read_spec_file
    from benchflow.tuning.spec import is_tuning_spec

    if is_tuning_spec(read_spec_file(Path(args.spec))):  # a tuning spec has a top-level search_space
        return _tuning(args)
    spec = load_spec(args.spec)
    if args.json:
        out = {
            "spec": redact_spec(spec.model_dump(mode="json")),  # never print secret-looking values
            "content_hash": spec.content_hash(),
            "cells": [c.model_dump(mode="json") for c in spec.cells()],
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(_summary(spec))
    for lp in spec.workload.load_points:
        if getattr(lp, "mode", None) == "trace":  # benchflow.spec.trace: what the replay sends
            print(f"  {lp.describe()}")
    if args.cells:
        print(f"{'#':>4}  {'cell id':<16}  {'backend':<20}  {'load':<22}  {'rep':>3}  seed")
        for c in spec.cells():
            print(f"{c.index:>4}  {c.id:<16}  {c.backend:<20}  {c.load_label:<22}  {c.repetition:>3}  {c.seed}")
    return 0


def _tuning(args: argparse.Namespace) -> int:
    from benchflow.tuning.spec import load_tuning_spec
    from benchflow.tuning.study import grid_size

    spec = load_tuning_spec(args.spec)
    if args.json:
        json.dump({"tuning_spec": spec.model_dump(mode="json")}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    budget = ", ".join(x for x in (f"{spec.trials.count} trials" if spec.trials.count else "",
                                   f"at most {spec.trials.timeout_s:g}s" if spec.trials.timeout_s else "") if x)
    grid = "" if any(getattr(p, "type", "") == "float" and p.step is None for p in spec.search_space.values()) \
        else f" ({grid_size(spec)} configurations)"
    print(f"{spec.name}: valid tuning spec; {len(spec.search_space)} flags [{', '.join(spec.search_space)}]{grid}, "
          f"{len(spec.constraints)} constraints, objective "
          f"{', '.join(f'{k} {d}' for k, d in spec.objective.metrics.items())} at {spec.objective.load_point}, "
          f"sampler {spec.sampler_name}, {budget}, backend {spec.backend.name} ({spec.backend.kind})")
    return 0
