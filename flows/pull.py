"""The pull step of every benchflow deployment (deployments/prefect.yaml).

The flows themselves are imported as modules (entrypoints such as ``flows.campaign:campaign``),
so they come from the installed package: a checkout installed with ``pip install -e .``, or the
worker image. The pull step only picks the working directory, against which relative spec paths
(``deployments/campaigns/nightly.yaml``) resolve:

1. ``$BENCHFLOW_CODE_DIR`` when set (must exist);
2. else the current directory when it holds ``deployments/`` (the worker image's /opt/benchflow,
   or a process worker started in a checkout);
3. else the checkout the ``flows`` package was installed from, when it holds ``deployments/``
   (a process worker runs each flow in a temporary directory by default).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CODE_DIR_ENV = "BENCHFLOW_CODE_DIR"


def code_dir(env: dict[str, str] | None = None, cwd: Path | None = None) -> Path:
    """The folder a benchflow flow run works in (see the module docstring)."""
    env = dict(os.environ if env is None else env)
    cwd = cwd or Path.cwd()
    if env.get(CODE_DIR_ENV):
        path = Path(env[CODE_DIR_ENV]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{CODE_DIR_ENV}={path} is not a directory")
        return path.resolve()
    if (cwd / "deployments").is_dir():
        return cwd
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "deployments").is_dir():
        return checkout
    return cwd


def use_code_dir() -> dict[str, str]:
    """Pull step: changes into :func:`code_dir` and returns ``{"directory": ...}``."""
    path = code_dir()
    os.chdir(path)
    log.info("benchflow flow run works in %s", path)
    return {"directory": str(path)}
