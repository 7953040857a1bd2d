"""``benchflow run SPEC``: the campaign flow (an ephemeral Prefect server unless PREFECT_API_URL is set)."""

from __future__ import annotations

import argparse
import os
import signal
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a campaign spec through the Prefect campaign flow",
                       description="Runs a campaign: deploys each backend, measures its cells, aggregates "
                                   "with confidence intervals, compares the backends, and stores everything.")
    p.add_argument("spec", help="campaign spec file (YAML or JSON)")
    p.add_argument("--campaign-id", help="resume this campaign (completed cells are skipped)")
    p.add_argument("--code-path", help="git checkout of the benchmarked code, recorded in the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchflow.campaign import validate_campaign_id
    from benchflow.errors import SpecError
    from benchflow.spec import load_spec

    load_spec(args.spec)  # a bad spec fails here, before Prefect or any backend starts
    if args.campaign_id:
        try:
            validate_campaign_id(args.campaign_id)
        except ValueError as e:
            raise SpecError([f"--campaign-id: {e}"]) from e
    # The throwaway server has nothing to report home, and often no network to do it with.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _exit_cleanly_on_sigterm()
    from flows.campaign import campaign

    state = campaign(spec=str(args.spec), campaign_id=args.campaign_id, code_path=args.code_path,
                     return_state=True)
    data = _state_data(state)
    cid = data.get("campaign_id") if isinstance(data, dict) else None
    if cid:
        from benchflow.cli.report import print_report
        from benchflow.errors import BenchflowError

        try:
            print_report(cid)
        except BenchflowError as e:  # e.g. the database went away: the flow's message below says why
            print(f"no report: {e}", file=sys.stderr)
    if state.is_failed():
        print(f"\ncampaign FAILED: {state.message}", file=sys.stderr)
        return 1
    if state.is_cancelled():
        print(f"\ncampaign CANCELLED: {state.message}", file=sys.stderr)
        return 130
    return 0


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM ends ``benchflow run`` through a normal interpreter exit.

    During the flow, Prefect's own handler turns SIGTERM into a crash (teardown and clean-up hooks
    run), then restores this handler and sends the signal again. Exiting through ``SystemExit``
    rather than dying by the signal lets the atexit hooks stop the ephemeral Prefect server,
    which would otherwise be left running.
    """
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _state_data(state) -> dict:
    try:
        result = state.result(raise_on_failure=False)
    except Exception as e:  # noqa: BLE001 - report what we can
        return {"error": str(e)}
    if isinstance(result, dict):
        return result
    if isinstance(getattr(result, "summary", None), dict):  # a failed or cancelled run's error carries it
        return result.summary
    return getattr(state, "data", None) if isinstance(getattr(state, "data", None), dict) else {}
