"""Where results go: the database URL, the artifact location and the spool, read from the environment.

Precedence is defaults < environment < explicit arguments. The database URL may carry a password;
it is excluded from the repr and only :attr:`StoreConfig.redacted_database_url` is ever logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from benchflow.errors import SpecError

DEFAULT_HOME = ".benchflow"
#: The total bound on one write (all tries), after which the results go to the spool.
DEFAULT_WRITE_TIMEOUT_S = 30.0

_PLAIN_POSTGRES = re.compile(r"^(postgres|postgresql)://", re.IGNORECASE)


def normalize_database_url(url: str) -> str:
    """Makes ``postgres://`` and ``postgresql://`` use psycopg 3 (``postgresql+psycopg://``)."""
    return _PLAIN_POSTGRES.sub("postgresql+psycopg://", url.strip(), count=1)


_QUERY_SECRET = re.compile(r"(?i)(^|&)(password|sslpassword)=[^&]*")


def redact_url(url: str) -> str:
    """The URL with its password (also a ``?password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    redacted = parts
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = netloc[0].split(":", 1)[0]
        redacted = redacted._replace(netloc=f"{userinfo}:***@{netloc[1]}")
    if parts.query:
        redacted = redacted._replace(query=_QUERY_SECRET.sub(r"\1\2=***", parts.query))
    # urlunsplit would turn sqlite:////abs/path into sqlite://abs/path: only rebuild when needed
    return url if redacted == parts else urlunsplit(redacted)


class RetryPolicy(BaseModel):
    """Exponential backoff for transient storage failures, before results are spooled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(3, ge=1, le=20, description="tries in all, the first one included")
    initial_delay_s: float = Field(0.5, ge=0, le=60, description="sleep before the second try")
    multiplier: float = Field(2.0, ge=1, le=10, description="each further sleep is this many times longer")
    max_delay_s: float = Field(5.0, ge=0, le=300, description="no single sleep is longer than this")

    def delays_s(self) -> list[float]:
        """The sleeps between tries (``attempts - 1`` of them)."""
        out, delay = [], self.initial_delay_s
        for _ in range(self.attempts - 1):
            out.append(min(delay, self.max_delay_s))
            delay *= self.multiplier
        return out


def _retry_policy(values: dict[str, object]) -> RetryPolicy:
    try:
        return RetryPolicy(**values)
    except ValidationError as e:
        problems = [f"BENCHFLOW_STORE_RETRY: {err['loc'][0]}: {err['msg']}" for err in e.errors()]
        raise SpecError(problems) from e


def _positive_float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as e:
        raise SpecError([f"{name}: {raw!r} is not a number of seconds"]) from e
    if not (0 < value <= 3600):
        raise SpecError([f"{name}: {raw!r} must be more than 0 and at most 3600 seconds"])
    return value


class StoreConfig(BaseModel):
    """Resolved storage settings. Build it with :meth:`from_env`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(..., description="BENCHFLOW_HOME: the local state folder")
    database_url: str = Field(..., repr=False, description="SQLAlchemy URL; may hold a password")
    artifacts: str = Field(..., description="a local folder or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    spool_dir: Path = Field(..., description="where results wait when storage is unreachable")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="backoff before spooling")
    write_timeout_s: float = Field(
        DEFAULT_WRITE_TIMEOUT_S, gt=0, le=3600,
        description="BENCHFLOW_STORE_WRITE_TIMEOUT_S: the most one write may take, retries included, "
                    "before its results are spooled (a hung database or S3 endpoint)")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> StoreConfig:
        """Reads ``BENCHFLOW_HOME``, ``BENCHFLOW_DATABASE_URL``, ``BENCHFLOW_ARTIFACTS``,
        ``BENCHFLOW_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``), ``BENCHFLOW_SPOOL_DIR``,
        ``BENCHFLOW_STORE_RETRY_ATTEMPTS``, ``BENCHFLOW_STORE_RETRY_DELAY_S`` and
        ``BENCHFLOW_STORE_WRITE_TIMEOUT_S``."""
        env = dict(os.environ if env is None else env)
        home = Path(env.get("BENCHFLOW_HOME") or DEFAULT_HOME).expanduser().absolute()
        db = env.get("BENCHFLOW_DATABASE_URL") or f"sqlite:///{home / 'benchflow.db'}"
        retry: dict[str, object] = {}
        for name, field, cast in (("BENCHFLOW_STORE_RETRY_ATTEMPTS", "attempts", int),
                                  ("BENCHFLOW_STORE_RETRY_DELAY_S", "initial_delay_s", float)):
            if env.get(name):
                try:
                    retry[field] = cast(env[name])
                except ValueError as e:
                    raise SpecError([f"{name}: {env[name]!r} is not a valid {cast.__name__}"]) from e
        values: dict[str, object] = {
            "home": home,
            "database_url": db,
            "artifacts": env.get("BENCHFLOW_ARTIFACTS") or str(home / "artifacts"),
            "s3_endpoint_url": env.get("BENCHFLOW_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
            "spool_dir": Path(env.get("BENCHFLOW_SPOOL_DIR") or home / "spool"),
            "retry": _retry_policy(retry),
            "write_timeout_s": _positive_float(env, "BENCHFLOW_STORE_WRITE_TIMEOUT_S", DEFAULT_WRITE_TIMEOUT_S),
        }
        values.update(overrides)
        values["database_url"] = normalize_database_url(str(values["database_url"]))
        return cls(**values)

    @field_serializer("database_url", "s3_endpoint_url")
    def _serialize_redacted(self, url: str | None) -> str | None:
        """Dumps (model_dump, JSON) show URLs without passwords, so the resolved config can be logged."""
        return redact_url(url) if url else url

    @property
    def redacted_database_url(self) -> str:
        return redact_url(self.database_url)

    @property
    def artifacts_are_s3(self) -> bool:
        return self.artifacts.startswith("s3://")
