"""``benchflow trigger DEPLOYMENT --spec FILE``: start a deployed flow through the Prefect API.

A thin helper over ``run_deployment``. The spec is validated here first (every cross-field rule:
duplicate backend names, ``sim`` without ``allow_simulated``, dataset syntax, missing files), so a
bad spec never becomes a flow run; then it is sent as a mapping (so the worker needs no copy of
the file), and the server checks it again against the deployment's parameter schema. With
``--idempotency-key``, asking twice gives the same flow run.

Flow-run parameters are stored by Prefect in plain text, so parameters holding secret-looking
values (env values and engine args named like a secret, secret flags of a command, passwords in
URLs) are refused, with the fields named: such values belong in a Prefect Secret block or the
worker's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@")


def secret_fields(value: Any, path: str = "") -> list[str]:
    """The places in ``value`` (parameters, a JSON spec) holding a secret-looking value, e.g.
    ``spec.backends[0].env.HF_TOKEN``, ``spec.backends[1].command[3] (value of --api-key)``,
    ``spec.backends[2].url (password in the URL)``."""
    from benchflow.redact import REDACTED, is_secret_name, redact_command

    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if is_secret_name(str(key)) and item not in (None, "", REDACTED) and not isinstance(item, (dict, list)):
                found.append(where)
            else:
                found.extend(secret_fields(item, where))
    elif isinstance(value, list):
        if all(isinstance(a, str) for a in value):
            hidden = redact_command(list(value))
            for i, (a, b) in enumerate(zip(value, hidden)):
                if a != b and a != REDACTED:
                    flag = value[i - 1] if b == REDACTED and i else a.partition("=")[0]
                    found.append(f"{path}[{i}] (value of {flag})")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                found.extend(secret_fields(item, f"{path}[{i}]"))
            elif _URL_PASSWORD.search(item):
                found.append(f"{path}[{i}] (password in a URL)")
    elif isinstance(value, str) and _URL_PASSWORD.search(value):
        found.append(f"{path} (password in a URL)")
    return found


def refuse_secrets(params: dict[str, Any], source: str | None = None) -> None:
    """Raises SpecError naming every secret-looking parameter value (Prefect would store it in clear)."""
    from benchflow.errors import SpecError

    found = secret_fields(params)
    if found:
        raise SpecError([f"{where}: looks like a secret; flow-run parameters are stored in plain text by "
                         "Prefect, so it is not sent. Put it in a Prefect Secret block (e.g. `hf-token` for "
                         "HF_TOKEN) or in the worker's environment, and leave it out of the spec"
                         for where in found], source=source)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trigger", help="start a deployment (campaign/adhoc, campaign/nightly, ...) via the Prefect API",
                       description="Creates a flow run of a deployment, e.g. campaign/adhoc with a spec file. "
                                   "Prints the flow run id and the campaign id; --wait follows it to the end.")
    p.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. campaign/adhoc")
    spec = p.add_mutually_exclusive_group()
    spec.add_argument("--spec", metavar="FILE",
                      help="campaign spec file: validated here (secret-looking values are refused: Prefect "
                           "stores parameters in plain text), then sent as its contents")
    spec.add_argument("--spec-path", metavar="PATH",
                      help="a spec path on the worker, relative to its benchflow checkout (sent as is)")
    p.add_argument("--campaign-id", help="campaign id (resume it; default: a new id, printed)")
    p.add_argument("--idempotency-key", metavar="KEY", help="the same key twice gives one flow run")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="another flow parameter (VALUE as JSON, else a string); repeatable")
    p.add_argument("--queue", help="work queue (default: the deployment's), e.g. a100")
    p.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it completed")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="with --wait: give up after S seconds")
    p.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL)")
    p.set_defaults(func=run)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    from benchflow.campaign import new_campaign_id, validate_campaign_id
    from benchflow.errors import SpecError
    from benchflow.spec import load_spec

    params: dict[str, Any] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SpecError([f"--param {item!r}: expected NAME=VALUE"])
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    if args.spec:
        spec = load_spec(args.spec)  # a bad spec stops here, before anything is sent
        params["spec"] = spec.model_dump(mode="json", exclude_defaults=True)
        params.setdefault("campaign_id", args.campaign_id or new_campaign_id(spec.name))
    elif args.spec_path:
        local = os.path.abspath(args.spec_path)
        if os.path.exists(local):  # the same checkout here: a bad spec stops here too
            load_spec(local)
        else:
            print(f"note: {args.spec_path} is not under {os.getcwd()}; sent unchecked (the worker resolves it "
                  "against its benchflow checkout)", file=sys.stderr)
        params["spec"] = args.spec_path
    if args.campaign_id:
        try:
            params["campaign_id"] = validate_campaign_id(args.campaign_id)
        except ValueError as e:
            raise SpecError([f"--campaign-id: {e}"]) from e
    return params


def _api_url(args: argparse.Namespace) -> str:
    from benchflow.errors import SpecError

    url = args.api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise SpecError(["--api-url: no Prefect server given (pass --api-url or set PREFECT_API_URL)"])
    return url.rstrip("/")


def run(args: argparse.Namespace) -> int:
    from tasks.trigger import trigger_deployment

    params = _params(args)
    refuse_secrets(params, args.spec or args.deployment)
    url = _api_url(args)
    timeout = args.timeout if args.wait else 0
    run_ = trigger_deployment(args.deployment, params, url, idempotency_key=args.idempotency_key,
                              queue=args.queue, timeout=timeout)
    return _report(run_, url, args.wait)


def _report(run_: Any, url: str, waited: bool) -> int:
    state = run_.state
    campaign_id = (run_.parameters or {}).get("campaign_id")
    ui = url[:-4] if url.endswith("/api") else url
    print(f"flow run {run_.id} ({run_.name}): {state.name if state else 'unknown'}")
    print(f"  {ui}/runs/flow-run/{run_.id}")
    if campaign_id:
        print(f"  campaign {campaign_id}  (benchflow report {campaign_id})")
    if not waited:
        return 0
    if state is not None and state.is_completed():
        return 0
    print(f"flow run ended {state.name if state else 'unknown'}: {state.message if state else ''}", file=sys.stderr)
    return 1
