"""Credentials never in clear (issue 11, item 4).

One small campaign on Postgres + S3 with every kind of secret a spec can carry:

- a ``sim`` backend with a secret-looking env value (``HF_TOKEN``) and ``--api-key <value>`` in its
  command;
- an ``openai`` backend whose URL holds ``user:password@``, pointing at a simulator the test runs;
- the database password in ``BENCHFLOW_DATABASE_URL``.

Then every output is searched: the console of ``benchflow -v run``, ``validate --json`` and
``report``, every row of every table, every S3 object, the spool, and Prefect's database.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, Deployment, make_deployment, spool_bytes, write_spec
from tests.support.sim_process import SimServer

pytestmark = pytest.mark.integration

CID = "e2e-secrets"
SECRET_ENV = f"hf-env-{uuid.uuid4().hex[:12]}"
SECRET_FLAG = f"sk-flag-{uuid.uuid4().hex[:12]}"
SECRET_PW = f"pw-url-{uuid.uuid4().hex[:12]}"
SECRETS = {"env value": SECRET_ENV, "--api-key value": SECRET_FLAG, "URL password": SECRET_PW,
           "database password": PASSWORD}


def _leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", errors="replace")
    return [what for what, secret in SECRETS.items() if secret.encode() in data]


@pytest.fixture(scope="module")
def remote_sim():
    server = SimServer("--served-model-name", "sim-e2e", "--time-scale", "0.1")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def campaign(secure_pg, s3_url: str, remote_sim: SimServer, tmp_path_factory: pytest.TempPathFactory):
    """The campaign, run once for this module's tests."""
    tmp_path = tmp_path_factory.mktemp("secrets")
    deployment = make_deployment(secure_pg, s3_url, tmp_path)
    plain_env = deployment.env
    # a loaded machine: the throwaway Prefect server may need more than its default 20 s to start
    deployment.env = lambda: {**plain_env(), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    host_port = remote_sim.url.removeprefix("http://")
    sim_cmd = f"exec {sys.executable} -m benchflow.sim --host {{host}} --port {{port}} --model {{model}} --time-scale 0.1"
    backends = [
        # sh -c SCRIPT $0 $1: the --api-key pair is in the command line, the simulator never sees it
        {"name": "local", "kind": "sim", "ready_timeout_s": 30, "env": {"HF_TOKEN": SECRET_ENV},
         "command": ["sh", "-c", sim_cmd, "--api-key", SECRET_FLAG]},
        {"name": "remote", "kind": "openai", "url": f"http://bench:{SECRET_PW}@{host_port}"},
    ]
    spec = write_spec(tmp_path / "secrets.yaml", "e2e-secrets", backends, repetitions=1, max_requests=4)
    rc, output = deployment.benchflow("-v", "run", str(spec), "--campaign-id", CID, timeout_s=300)
    return deployment, spec, rc, output


def _all_objects(d: Deployment) -> dict[str, bytes]:
    s3 = d.s3()
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=d.bucket):
        for item in page.get("Contents", []):
            out[item["Key"]] = s3.get_object(Bucket=d.bucket, Key=item["Key"])["Body"].read()
    return out


def _prefect_databases(home: Path) -> list[Path]:
    return [p for p in (home / "prefect").rglob("*") if p.is_file() and p.suffix in (".db", ".db-wal", ".sqlite")]


def test_no_secret_in_any_output_row_object_or_database(campaign):
    d, spec, rc, output = campaign
    assert "local" in output and CID in output, output
    assert rc == 0, output
    assert "--api-key ***" in output  # `-v` shows the backend command, redacted

    problems: dict[str, list[str]] = {}

    def check(where: str, data: str | bytes) -> None:
        found = _leaks(data)
        if found:
            problems[where] = found

    check("console of `benchflow -v run`", output)
    for args in (("validate", str(spec)), ("validate", "--json", str(spec)), ("report", CID)):
        code, shown = d.benchflow(*args)
        assert code in (0, 1), shown
        check(f"console of `benchflow {' '.join(a if a != str(spec) else 'SPEC' for a in args)}`", shown)

    tables = d.dump_tables()
    for line in tables.splitlines():
        table = line.split(":", 1)[0]
        check(f"database table {table}", line)
    objects = _all_objects(d)
    assert any(k.endswith("report.md") for k in objects), sorted(objects)
    for key, data in objects.items():
        check(f"S3 object {key}", data)
    if d.spool_dir.exists():
        check("the spool", spool_bytes(d.spool_dir))

    assert not problems, json.dumps(problems, indent=1)

    # the redacted forms are there, so the checks above looked at the right places
    assert "bench:***@" in tables
    assert "--api-key" in tables and '"***"' in tables


def test_no_secret_in_prefects_database(campaign):
    """Prefect's database holds flow-run parameters, task-run inputs and state messages."""
    d, _, _, _ = campaign
    databases = _prefect_databases(d.home)
    if not databases:
        pytest.skip(f"no Prefect database under {d.home / 'prefect'} (the run used another API)")
    leaks = {str(p.relative_to(d.home)): _leaks(p.read_bytes()) for p in databases}
    assert not any(leaks.values()), leaks
