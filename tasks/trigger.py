"""Starts a deployment's flow run through the Prefect API (behind ``benchflow trigger``)."""

from __future__ import annotations

from typing import Any

from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings

from benchflow.errors import BenchflowError, SpecError


def _server_detail(err: Exception) -> str:
    response = getattr(err, "response", None)
    try:
        detail = response.json().get("detail") if response is not None else None
    except ValueError:
        detail = None
    return str(detail or err)


def trigger_deployment(deployment: str, parameters: dict[str, Any], api_url: str, *,
                       idempotency_key: str | None = None, queue: str | None = None,
                       timeout: float | None = 0) -> Any:
    """Creates (or, with a known idempotency key, finds) the flow run; waits up to ``timeout``
    seconds (0: not at all, None: until it ends). Server rejections become SpecError, other API
    errors BenchflowError."""
    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            return run_deployment(deployment, parameters=parameters, idempotency_key=idempotency_key,
                                  work_queue_name=queue, timeout=timeout, poll_interval=2, as_subflow=False)
        except ObjectNotFound as e:
            raise BenchflowError(f"no deployment {deployment!r} on {api_url}") from e
        except PrefectHTTPStatusError as e:
            if e.response.status_code in (409, 422):  # the parameter schema rejected the parameters
                raise SpecError([f"rejected by the server: {_server_detail(e)}"], source=deployment) from e
            raise BenchflowError(f"Prefect API at {api_url}: {_server_detail(e)}") from e
