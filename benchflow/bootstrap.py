"""What ``benchflow infra bootstrap`` creates on a Prefect server: the plan (pure; no Prefect).

- work pools from ``deployments/work-pools/*.json``: ``benchflow-gpu`` (process, the default for
  bare-metal GPU hosts) and ``benchflow-docker`` (docker), each with one work queue per GPU class
  (``h100``, ``a100``) beside Prefect's ``default`` queue;
- one global concurrency limit ``gpu-<host>-<index>`` (limit 1) per physical GPU, for the hosts of
  the config file, or this host (``--gpus N``, else counted by NVML);
- Prefect Variables for non-secret settings (``benchflow_artifacts``: the artifact location);
- Secret blocks whose values come from environment variables of the process running the
  bootstrap (never from a file): ``benchflow-database-url`` <- ``BENCHFLOW_DATABASE_URL``, ...;
- the automation ``benchflow-crash-zombie-flow-runs``: Prefect's documented "zombie flow"
  automation (a proactive trigger on missing ``prefect.flow-run.heartbeat`` events that sets the
  run Crashed), limited to runs tagged ``benchflow``; ``within`` is ``missed`` heartbeats of the
  workers' ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (``zombie_flow_runs.heartbeat_s``, 180 by default
  as in Prefect; set both to 30 for detection within 90 s).

The config file (``infra/bootstrap.yaml`` is an example) overrides any of these.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError

from benchflow.errors import SpecError
from benchflow.gpu_slots import host_slot_names, host_slug
from benchflow.spec.types import StrictModel

#: The repository root (a checkout, or /opt/benchflow in the worker image holds deployments/).
_ROOT = Path(__file__).resolve().parents[1]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_VARIABLE = r"^[a-z0-9_]{1,255}$"
_BLOCK = r"^[a-z0-9-]{1,255}$"
_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"

DEFAULT_QUEUES = ("h100", "a100")
DEFAULT_SECRETS_FROM_ENV = {
    "benchflow-database-url": "BENCHFLOW_DATABASE_URL",
    "benchflow-s3-access-key-id": "AWS_ACCESS_KEY_ID",
    "benchflow-s3-secret-access-key": "AWS_SECRET_ACCESS_KEY",
    "hf-token": "HF_TOKEN",
}
DEFAULT_VARIABLES_FROM_ENV = {
    "benchflow_artifacts": "BENCHFLOW_ARTIFACTS",
    "benchflow_s3_endpoint_url": "BENCHFLOW_S3_ENDPOINT_URL",
}


class QueueConfig(StrictModel):
    name: str = Field(..., pattern=_NAME, description="work queue name, e.g. a GPU class (h100)")
    description: str = Field("", description="shown in the UI")


class PoolConfig(StrictModel):
    name: str = Field(..., pattern=_NAME, description="work pool name")
    type: Literal["process", "docker"] = Field(..., description="worker type")
    base_job_template: str = Field(..., description="JSON file (relative to the config file or the repository)")
    queues: list[QueueConfig] = Field(default_factory=lambda: [QueueConfig(name=q) for q in DEFAULT_QUEUES])
    description: str = Field("", description="shown in the UI")


class HostConfig(StrictModel):
    name: str = Field(..., min_length=1, description="host name as the flows see it (hostname or $BENCHFLOW_GPU_HOST)")
    gpus: int = Field(..., ge=0, le=64, description="number of GPUs: one slot gpu-<host>-<i> each")


def _default_pools() -> list[PoolConfig]:
    return [
        PoolConfig(name="benchflow-gpu", type="process", base_job_template="deployments/work-pools/process.json",
                   description="benchflow on bare-metal GPU hosts: flow runs are processes"),
        PoolConfig(name="benchflow-docker", type="docker", base_job_template="deployments/work-pools/docker.json",
                   description="benchflow in the worker image: flow runs are containers, backends sibling containers"),
    ]


class ZombieConfig(StrictModel):
    """Prefect's zombie-flow automation: a run tagged ``benchflow`` that stops sending heartbeats is Crashed."""

    enabled: bool = Field(True, description="create the automation")
    name: str = Field("benchflow-crash-zombie-flow-runs", min_length=1, description="the automation's name")
    heartbeat_s: int = Field(180, ge=30, le=86400,
                             description="the workers' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (Prefect's default: 180)")
    missed: int = Field(3, ge=2, le=100, description="heartbeats missed before a run is marked Crashed")
    tag: str = Field("benchflow", min_length=1, description="only flow runs with this tag")

    @property
    def within_s(self) -> int:
        return self.heartbeat_s * self.missed


class InfraConfig(StrictModel):
    """The bootstrap config file."""

    work_pools: list[PoolConfig] = Field(default_factory=_default_pools)
    hosts: list[HostConfig] = Field(default_factory=list, description="GPU hosts (empty: this host)")
    variables: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Prefect Variables with literal (non-secret) values"
    )
    variables_from_env: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_VARIABLES_FROM_ENV),
        description="variable name -> environment variable; skipped when the variable is unset",
    )
    secrets_from_env: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SECRETS_FROM_ENV),
        description="Secret block name -> environment variable; skipped when the variable is unset",
    )
    zombie_flow_runs: ZombieConfig = Field(default_factory=ZombieConfig,
                                           description="Prefect's zombie-flow automation (missing heartbeats -> Crashed)")


@dataclass(frozen=True)
class PoolPlan:
    name: str
    type: str
    base_job_template: dict[str, Any]
    queues: list[QueueConfig]
    description: str


@dataclass(frozen=True)
class BootstrapPlan:
    """Everything to create. Secret values are SecretStr: they never show in a repr or a log."""

    pools: list[PoolPlan] = field(default_factory=list)
    gpu_limits: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, SecretStr] = field(default_factory=dict)
    zombie: ZombieConfig | None = None

    def describe(self) -> list[str]:
        lines = [f"work pool {p.name} ({p.type}), queues {', '.join(q.name for q in p.queues) or '-'}"
                 for p in self.pools]
        lines.append(f"GPU slots (limit 1 each): {', '.join(self.gpu_limits) or 'none'}")
        lines += [f"variable {k} = {v!r}" for k, v in sorted(self.variables.items())]
        lines += [f"secret block {k} (value from the environment)" for k in sorted(self.secrets)]
        if self.zombie is not None:
            lines.append(f"automation {self.zombie.name}: a flow run tagged {self.zombie.tag} without a heartbeat for "
                         f"{self.zombie.within_s}s is marked Crashed")
        return lines


def load_infra_config(path: str | Path | None) -> tuple[InfraConfig, Path]:
    """The config (defaults when ``path`` is None) and the folder its relative paths start from."""
    if path is None:
        return InfraConfig(), Path.cwd()
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SpecError([f"cannot read {path}: {e}"], source=str(path)) from e
    try:
        config = InfraConfig.model_validate(data)
    except ValidationError as e:
        problems = [f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()]
        raise SpecError(problems, source=str(path)) from e
    problems = _name_problems(config)
    if problems:
        raise SpecError(problems, source=str(path))
    return config, path.resolve().parent


def _name_problems(config: InfraConfig) -> list[str]:
    import re

    variables = [*config.variables, *config.variables_from_env]
    problems = [f"variables.{k}: use lowercase letters, digits and _" for k in variables if not re.match(_VARIABLE, k)]
    problems += [f"secrets_from_env.{k}: use lowercase letters, digits and -" for k in config.secrets_from_env
                 if not re.match(_BLOCK, k)]
    problems += [f"{where}.{k}: {v!r} is not an environment variable name"
                 for where, mapping in (("variables_from_env", config.variables_from_env),
                                        ("secrets_from_env", config.secrets_from_env))
                 for k, v in mapping.items() if not re.match(_ENV, v)]
    hosts = [host_slug(h.name) for h in config.hosts]
    problems += [f"hosts: {h} is listed twice" for h in sorted({h for h in hosts if hosts.count(h) > 1})]
    return problems


def find_template(name: str, base_dir: Path) -> Path:
    """A job template file: as given, relative to ``base_dir``, the current folder or the repository."""
    path = Path(name).expanduser()
    candidates = [path] if path.is_absolute() else [base_dir / path, Path.cwd() / path, _ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SpecError([f"base job template {name}: not found (looked in {', '.join(str(c.parent) for c in candidates)})"])


def load_template(name: str, base_dir: Path) -> dict[str, Any]:
    path = find_template(name, base_dir)
    try:
        template = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError([f"base job template {path}: {e}"]) from e
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= set(template):
        raise SpecError([f"base job template {path}: needs job_configuration and variables"])
    return template


def build_plan(config: InfraConfig, base_dir: Path, *, local_host: HostConfig | None = None,
               env: Mapping[str, str] | None = None) -> BootstrapPlan:
    """The objects to create. ``local_host`` is used when the config lists no hosts."""
    env = os.environ if env is None else env
    pools = [PoolPlan(p.name, p.type, load_template(p.base_job_template, base_dir), list(p.queues), p.description)
             for p in config.work_pools]
    hosts = config.hosts or ([local_host] if local_host else [])
    limits = [name for h in hosts for name in host_slot_names(h.name, h.gpus)]
    variables: dict[str, Any] = {k: env[v] for k, v in config.variables_from_env.items() if env.get(v)}
    variables.update(config.variables)
    secrets = {k: SecretStr(env[v]) for k, v in config.secrets_from_env.items() if env.get(v)}
    zombie = config.zombie_flow_runs if config.zombie_flow_runs.enabled else None
    return BootstrapPlan(pools=pools, gpu_limits=limits, variables=variables, secrets=secrets, zombie=zombie)
