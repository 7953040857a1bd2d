"""The exception hierarchy. Library errors are translated at the boundary (``raise ... from e``)."""

from __future__ import annotations


class BenchflowError(Exception):
    """Root of every error benchflow raises on purpose."""


class SpecError(BenchflowError):
    """A campaign spec (or CLI input) is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.source = source
        head = f"invalid spec {source}" if source else "invalid spec"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class BackendStartError(BenchflowError):
    """A serving backend could not be started or never became ready. Carries its log tail."""

    def __init__(self, message: str, log_tail: str = "", transient: bool = False):
        self.log_tail = log_tail
        self.transient = transient
        full = message if not log_tail else f"{message}\n--- backend log tail ---\n{log_tail}"
        super().__init__(full)


class EndpointUnreachableError(BenchflowError):
    """The client could not reach an endpoint at all."""


class StorageError(BenchflowError):
    """The results database or the artifact store failed."""


class StorageUnavailableError(StorageError):
    """The database or artifact store could not be reached (transient: retry, then spool)."""


class ResultsNotStoredError(StorageError):
    """Neither the store nor the local spool could take a result (a full disk, say). The
    campaign must stop cleanly: the message names what was lost and where it was to go."""


class SchemaTooNewError(StorageError):
    """The database schema is newer than this code understands."""


class NvmlError(BenchflowError):
    """NVML is unavailable or a query failed."""

    def __init__(self, message: str, transient: bool = False):
        self.transient = transient
        super().__init__(message)


class CampaignMismatchError(BenchflowError):
    """A campaign id was reused with a different spec."""


class CampaignCancelled(BenchflowError):
    """A cancel was requested for the running campaign (from the Prefect UI, the CLI or the API)."""
