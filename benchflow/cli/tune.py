"""``benchflow tune SPEC [--study-id ID]``, ``benchflow tune report [ID] [--html F]``,
``benchflow tune apply ID --out F``.

The study lives in Optuna's tables in the results database (``BENCHFLOW_DATABASE_URL``, else SQLite
under ``BENCHFLOW_HOME``); ``optuna-dashboard <that URL>`` opens it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune engine flags with Optuna (or: tune report [ID], tune apply ID --out F)",
                       description="Runs a tuning study: each trial deploys the backend with sampled flags, "
                                   "measures its cells, and tells Optuna. `tune report [ID]` prints a study's "
                                   "report; `tune apply ID --out backend.yaml` writes its winning backend block.")
    p.add_argument("spec", help="tuning spec (YAML/JSON), or 'report' / 'apply'")
    p.add_argument("id", nargs="?", help="study id (report, apply)")
    p.add_argument("--study-id", help="resume this study (completed trials are not measured again)")
    p.add_argument("--out", help="apply: the file to write (YAML; .json writes JSON)")
    p.add_argument("--html", metavar="FILE", type=Path,
                   help="report: also write one self-contained HTML file (charts inline, no network needed)")
    p.set_defaults(func=run)


def _results():
    from benchflow.store.results import Results

    results = Results.from_env()
    results.store.upgrade()
    return results


def run(args: argparse.Namespace) -> int:
    import optuna

    from benchflow.errors import SpecError
    from benchflow.tuning import report
    from benchflow.tuning.study import storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.spec in ("report", "apply"):
        results = _results()
        study = report.load(storage_url(results.config.database_url), args.id)
        if args.spec == "report":
            sys.stdout.write(report.markdown(study))
            if args.html is not None:
                _write_html(study, args.html, storage_url(results.config.database_url))
            return 0
        if not args.id or not args.out:
            raise SpecError(["tune apply: give a study id and --out FILE"])
        block = {"backends": [report.backend_block(study)]}
        out = Path(args.out)
        out.write_text(json.dumps(block, indent=2) + "\n" if out.suffix == ".json" else _yaml(block))
        print(f"wrote {out}: backend {block['backends'][0]['name']}\n{report.serve_command(study)}")
        return 0
    return _tune(args)


def _write_html(study, path: Path, storage: str) -> None:
    from benchflow.errors import BenchflowError
    from benchflow.store.config import redact_url
    from benchflow.tuning import report

    text = report.render_html(study, footer=f"benchflow tune report · study {study.study_name} · open it live: "
                                            f"optuna-dashboard {redact_url(storage)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise BenchflowError(f"cannot write the HTML report to {path}: {e.strerror or e}") from e
    print(f"HTML report: {path}")


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _tune(args: argparse.Namespace) -> int:
    from benchflow.tuning import report
    from benchflow.tuning.confirm import confirm_study
    from benchflow.tuning.local import campaign_hook, local_steps, reap_study_leftovers
    from benchflow.store.config import redact_url
    from benchflow.tuning.spec import load_tuning_spec
    from benchflow.tuning.parallel import run_tuning
    from benchflow.tuning.study import new_study_id, prepare_storage

    spec = load_tuning_spec(args.spec)
    results = _results()
    study_id = args.study_id or new_study_id(spec)
    storage = prepare_storage(results.config.database_url)
    runs = results.config.home / "runs"
    reap_study_leftovers(runs, study_id)
    steps_for = local_steps(results, runs)
    hook = campaign_hook(results, study_id)
    print(f"study {study_id}: trials in {results.describe()}; study in {redact_url(storage)} "
          f"(optuna-dashboard opens it)", file=sys.stderr)
    out = run_tuning(spec, storage, steps_for, study_id=study_id, on_campaign=hook,
                    progress=lambda note: print(note, file=sys.stderr))
    study = report.load(storage, study_id)
    if spec.confirm:
        confirm_study(study, spec, steps_for, on_campaign=hook)
    sys.stdout.write(report.markdown(study))
    if report.study_charts(study, results):  # the same pictures the flow stores (studies/<id>/charts/)
        print(f"charts: studies/{study_id}/charts/ in {results.describe()}; "
              f"`benchflow tune report {study_id} --html FILE` shows them", file=sys.stderr)
    print(f"\n{out.ran} trials run now, {out.finished} finished in all (stopped by {out.stopped_by}); "
          f"resume with --study-id {study_id}", file=sys.stderr)
    return 0
