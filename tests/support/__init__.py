"""Shared test helpers (see tests/support/helpers.py): ``free_port``, ``write_spec``, ``wait_for``."""

from tests.support.helpers import (
    PREFECT_STARTUP_TIMEOUT_S,
    free_port,
    prefect_test_env,
    wait_for,
    wait_for_async,
    write_spec,
)

__all__ = ["PREFECT_STARTUP_TIMEOUT_S", "free_port", "prefect_test_env", "wait_for", "wait_for_async",
           "write_spec"]
