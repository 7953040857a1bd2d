"""Secrets and settings are loaded inside the flow run, never from prefect.yaml job variables.

An environment variable that is set wins. One that is not set is filled in, for this process
only, from the Prefect Secret block (or, for non-secret settings, the Prefect Variable) that
``benchflow infra bootstrap`` creates: ``BENCHFLOW_DATABASE_URL`` <- Secret
``benchflow-database-url``, the S3 keys <- ``benchflow-s3-access-key-id`` /
``benchflow-s3-secret-access-key``, ``BENCHFLOW_ARTIFACTS`` <- Variable ``benchflow_artifacts``...
Values are never logged; only the names of what was loaded are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

from benchflow.bootstrap import DEFAULT_SECRETS_FROM_ENV, DEFAULT_VARIABLES_FROM_ENV

log = logging.getLogger(__name__)

#: environment variable -> Secret block. HF_TOKEN is read where it is used (the docker launcher).
SECRET_BLOCKS = {env: block for block, env in DEFAULT_SECRETS_FROM_ENV.items() if env != "HF_TOKEN"}
#: environment variable -> Prefect Variable.
VARIABLES = {env: name for name, env in DEFAULT_VARIABLES_FROM_ENV.items()}


def _secret(name: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name, _sync=True).get())
    except ValueError:  # no such block
        return None


def _variable(name: str) -> str | None:
    from prefect.variables import Variable

    value = Variable.get(name, default=None, _sync=True)
    return None if value is None else str(value)


def load_settings(env: MutableMapping[str, str] | None = None) -> list[str]:
    """Fills unset settings from Secret blocks and Variables; returns the names it filled in.

    An unreachable Prefect API or a missing block is not an error: the setting stays unset and
    its default applies (the embedded SQLite database, the local artifact folder).
    """
    env = os.environ if env is None else env
    loaded = []
    for kind, mapping, read in (("secret", SECRET_BLOCKS, _secret), ("variable", VARIABLES, _variable)):
        for var, name in mapping.items():
            if env.get(var):
                continue
            try:
                value = read(name)
            except Exception as e:  # noqa: BLE001 - no API, no permission: the default applies
                log.debug("could not read %s %s: %s", kind, name, type(e).__name__)
                continue
            if value:
                env[var] = value
                loaded.append(var)
    if loaded:
        log.info("loaded %s from Prefect Secret blocks / Variables", ", ".join(loaded))
    return loaded
