"""``benchflow run SPEC``: the campaign flow (an ephemeral Prefect server unless PREFECT_API_URL is set)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

#: Exit codes of ``benchflow run``.
EXIT_OK = 0
EXIT_FAILED = 1          # the campaign failed (some cells failed, storage unreachable, refused, ...)
EXIT_SPEC = 2            # the spec or the arguments are invalid: nothing ran
EXIT_NOTHING_VALID = 3   # it ran to the end, but not one cell gave a valid measurement
EXIT_CANCELLED = 130     # cancelled (Prefect UI, API, CLI) or interrupted

EPILOG = """exit codes:
  0  completed
  1  failed: some cells failed, or the results could not be stored, or the run was refused
  2  invalid spec or arguments: nothing ran
  3  measured, but nothing valid: every cell failed or was marked invalid (see the report)
  130 cancelled (from the Prefect UI, the API or `prefect flow-run cancel`) or interrupted"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a campaign spec through the Prefect campaign flow",
                       description="Runs a campaign: deploys each backend, measures its cells, aggregates with\n"
                                   "confidence intervals, compares the backends, and stores everything.\n"
                                   "Without PREFECT_API_URL, a temporary Prefect server is started first (it may\n"
                                   "take up to PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, default 120).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="campaign spec file (YAML or JSON)")
    p.add_argument("--campaign-id", help="resume this campaign (completed cells are skipped)")
    p.add_argument("--code-path", help="git checkout of the benchmarked code, recorded in the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchflow.campaign import validate_campaign_id
    from benchflow.errors import SpecError
    from benchflow.spec import load_spec

    load_spec(args.spec)  # a bad spec fails here, before Prefect or any backend starts
    from benchflow.store.manifest import FAKE_NVML_ENV, FAKE_NVML_WARNING

    if os.environ.get(FAKE_NVML_ENV):
        print(FAKE_NVML_WARNING, file=sys.stderr)
    if args.campaign_id:
        try:
            validate_campaign_id(args.campaign_id)
        except ValueError as e:
            raise SpecError([f"--campaign-id: {e}"]) from e
    # The throwaway server has nothing to report home, and often no network to do it with.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _exit_cleanly_on_sigterm()
    _interrupt_on_sigint()
    from tasks.local_server import start_local_server

    start_local_server()  # before the flow, in this thread: a clear line if it cannot start
    if args.campaign_id:
        _crash_orphaned_run(args.campaign_id)
    from flows.campaign import campaign

    from benchflow.progress import TerminalProgress

    if not getattr(args, "verbose", 0):
        quiet_task_runs()
    with TerminalProgress() as view:
        view.route_logs(logging.getLogger().handlers)
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
    if state.is_cancelled():
        print(f"\ncampaign CANCELLED: {state.message}", file=sys.stderr)
        return EXIT_CANCELLED
    if cid and _nothing_valid(cid):
        print(f"\ncampaign {cid}: measured, but nothing valid: every cell failed or was marked invalid "
              f"(exit code {EXIT_NOTHING_VALID}); see the report above", file=sys.stderr)
        return EXIT_NOTHING_VALID
    if state.is_failed():
        print(f"\ncampaign FAILED: {state.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class _TaskRunNoise(logging.Filter):
    """Drops the task runs' ``Finished in state Completed()`` lines (one per task) from the console;
    their own messages (a cell's summary, warnings, failures) stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect.task_runs") or record.levelno >= logging.WARNING:
            return True
        return not str(record.msg).startswith("Finished in state")


def quiet_task_runs() -> None:
    """Task runs' state lines leave the console of ``benchflow run`` (``-v`` keeps them). Only the
    console's handlers get the filter: the lines still reach Prefect's API (the UI's task-run logs),
    and workers are untouched."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _TaskRunNoise) for f in handler.filters):
            handler.addFilter(_TaskRunNoise())


def _nothing_valid(campaign_id: str) -> bool:
    """True when the campaign has cells and not one of them completed with a valid measurement."""
    from benchflow.errors import BenchflowError
    from benchflow.store.results import Results

    try:
        cells = Results.from_env().store.cells(campaign_id)
    except BenchflowError:
        return False
    return bool(cells) and not any(c.get("status") == "completed" and not c.get("invalid_reason") for c in cells)


def _crash_orphaned_run(campaign_id: str) -> None:
    """A resume: the campaign's earlier flow run, left Running by a killed process, becomes Crashed."""
    from benchflow.errors import BenchflowError
    from benchflow.store.results import Results
    from tasks.local_server import crash_orphaned_run

    try:
        row = Results.from_env().store.get_campaign(campaign_id)
    except BenchflowError:
        return
    if row and row.get("flow_run_id"):
        try:
            crash_orphaned_run(row["flow_run_id"], campaign_id)
        except Exception as e:  # noqa: BLE001 - a state we cannot fix must not stop the resume
            print(f"warning: could not mark the earlier flow run {row['flow_run_id']} crashed: {e}",
                  file=sys.stderr)


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


def _interrupt_on_sigint() -> None:
    """Ctrl-C stops ``benchflow run`` the way SIGTERM does.

    A KeyboardInterrupt can land anywhere in the main thread, and some places do not let it through:
    ``asyncio.run`` turns SIGINT into a cancellation of its main task, and a loaded test run saw
    ``benchflow run`` finish the campaign and exit 0 after Ctrl-C. SIGTERM has one reliable path:
    during the flow Prefect's handler turns it into a crash (backend torn down, campaign marked
    ``cancelled``), outside it :func:`_exit_cleanly_on_sigterm` exits. So the first Ctrl-C sends this
    process SIGTERM (the campaign's log names SIGINT); a second one raises KeyboardInterrupt at once.
    """
    def handler(signum, frame):
        if os.environ.get(STOP_SIGNAL_ENV) == "SIGINT":
            raise KeyboardInterrupt
        os.environ[STOP_SIGNAL_ENV] = "SIGINT"
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGINT, handler)


#: Set to the name of the signal that is stopping ``benchflow run`` when it is not the one Prefect
#: reports (Ctrl-C is delivered as SIGTERM): what the campaign's "cancelled" log line names.
STOP_SIGNAL_ENV = "BENCHFLOW_STOP_SIGNAL"


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
