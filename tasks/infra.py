"""Prefect API objects behind ``benchflow infra bootstrap`` and the per-GPU slots: work pools,
work queues, global concurrency limits, variables and Secret blocks. Every ``ensure_*`` creates
what is missing, updates what differs and leaves the rest alone, so applying a plan twice
changes nothing the second time. ``client`` is a sync Prefect client (``get_client(sync_client=True)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate, VariableCreate, VariableUpdate, WorkPoolCreate,
    WorkPoolUpdate,
)
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from benchflow.bootstrap import BootstrapPlan, PoolPlan, ZombieConfig
from benchflow.errors import BenchflowError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    kind: str  # work-pool, work-queue, concurrency-limit, variable, secret, automation
    name: str
    action: str  # created, updated, unchanged
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action:9} {self.kind:17} {self.name}" + (f"  ({self.detail})" if self.detail else "")


def ensure_work_pool(client: Any, pool: PoolPlan) -> Change:
    try:
        current = client.read_work_pool(pool.name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=pool.name, type=pool.type, description=pool.description or None,
                                               base_job_template=pool.base_job_template))
        return Change("work-pool", pool.name, "created", pool.type)
    if current.type != pool.type:
        raise BenchflowError(f"work pool {pool.name} exists with type {current.type}, not {pool.type}; "
                             "rename one of them (a pool's type cannot change)")
    differs = [what for what, ok in (("base job template", current.base_job_template == pool.base_job_template),
                                      ("description", (current.description or "") == pool.description)) if not ok]
    if not differs:
        return Change("work-pool", pool.name, "unchanged")
    client.update_work_pool(pool.name, WorkPoolUpdate(base_job_template=pool.base_job_template,
                                                      description=pool.description or None))
    return Change("work-pool", pool.name, "updated", ", ".join(differs))


def ensure_work_queues(client: Any, pool: PoolPlan) -> list[Change]:
    existing = {q.name: q for q in client.read_work_queues(work_pool_name=pool.name)}
    changes = []
    for queue in pool.queues:
        name = f"{pool.name}/{queue.name}"
        current = existing.get(queue.name)
        if current is None:
            try:
                client.create_work_queue(name=queue.name, work_pool_name=pool.name,
                                         description=queue.description or None)
                changes.append(Change("work-queue", name, "created"))
            except ObjectAlreadyExists:  # created by someone else meanwhile
                changes.append(Change("work-queue", name, "unchanged"))
        elif (current.description or "") != queue.description:
            client.update_work_queue(current.id, description=queue.description or None)
            changes.append(Change("work-queue", name, "updated", "description"))
        else:
            changes.append(Change("work-queue", name, "unchanged"))
    return changes


def ensure_gpu_limit(client: Any, name: str, limit: int = 1) -> Change:
    """A global concurrency limit ``name`` with ``limit`` slots, active."""
    try:
        current = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True))
            return Change("concurrency-limit", name, "created", f"limit {limit}")
        except ObjectAlreadyExists:  # two flows or bootstraps raced; the other one made it
            return Change("concurrency-limit", name, "unchanged")
    if current.limit == limit and current.active:
        return Change("concurrency-limit", name, "unchanged")
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
    return Change("concurrency-limit", name, "updated", f"limit {current.limit} -> {limit}, active")


def ensure_variable(client: Any, name: str, value: Any) -> Change:
    current = client.read_variable_by_name(name)
    if current is None:
        client.create_variable(VariableCreate(name=name, value=value))
        return Change("variable", name, "created")
    if current.value == value:
        return Change("variable", name, "unchanged")
    client.update_variable(VariableUpdate(name=name, value=value))
    return Change("variable", name, "updated")


def ensure_secret(name: str, value: str) -> Change:
    """A Secret block; the value is compared, never logged."""
    from prefect.blocks.system import Secret

    try:
        current = Secret.load(name, _sync=True).get()
    except ValueError:  # no such block
        current = None
    if current == value:
        return Change("secret", name, "unchanged")
    Secret(value=value).save(name, overwrite=True, _sync=True)
    return Change("secret", name, "created" if current is None else "updated")


def zombie_automation(config: ZombieConfig) -> Any:
    """Prefect's documented zombie-flow automation (docs: "How to detect and respond to zombie flows"),
    limited to flow runs tagged ``config.tag``: after a heartbeat, no heartbeat and no final state
    within ``config.within_s`` seconds sets the run Crashed."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    message = (f"no heartbeat for {config.within_s}s: its process or host is gone "
               f"(automation {config.name}, from benchflow infra bootstrap)")
    return AutomationCore(
        name=config.name,
        description="benchflow: crash flow runs whose heartbeats stopped (a worker or host died), so that "
                    "a fanned-out campaign starts their backend again",
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "tag",
                                                 "prefect.resource.id": f"prefect.tag.{config.tag}"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=config.within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)],
    )


def ensure_automation(client: Any, config: ZombieConfig) -> Change:
    """The zombie-flow automation, created or brought in line (one automation of that name)."""
    wanted = zombie_automation(config)
    current = client.read_automations_by_name(config.name)
    if not current:
        client.create_automation(wanted)
        return Change("automation", config.name, "created", f"within {config.within_s}s")
    keep = {"name", "description", "enabled", "trigger", "actions"}
    have = _canon(current[0].model_dump(mode="json", include=keep))
    if have == _canon(wanted.model_dump(mode="json", include=keep)):
        return Change("automation", config.name, "unchanged")
    client.update_automation(current[0].id, wanted)
    return Change("automation", config.name, "updated", f"within {config.within_s}s")


def _canon(value: Any) -> Any:
    """A JSON value with its lists of strings sorted (the trigger's sets come back in any order)."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canon(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def apply_plan(client: Any, plan: BootstrapPlan) -> list[Change]:
    """Applies every object of ``plan``; returns what happened to each."""
    changes: list[Change] = []
    for pool in plan.pools:
        changes.append(ensure_work_pool(client, pool))
        changes += ensure_work_queues(client, pool)
    changes += [ensure_gpu_limit(client, name) for name in plan.gpu_limits]
    changes += [ensure_variable(client, name, value) for name, value in sorted(plan.variables.items())]
    changes += [ensure_secret(name, value.get_secret_value()) for name, value in sorted(plan.secrets.items())]
    if plan.zombie is not None:
        changes.append(ensure_automation(client, plan.zombie))
    for change in changes:
        if change.action != "unchanged":
            log.info("%s", change)
    return changes


def snapshot(client: Any, plan: BootstrapPlan) -> dict[str, Any]:
    """The server's state of every object in ``plan`` (ids and timestamps included): what a second
    bootstrap must leave exactly as it was."""
    state: dict[str, Any] = {}
    for pool in plan.pools:
        # a polling worker touches status/last_polled and so `updated`; everything a bootstrap sets is compared
        wp = client.read_work_pool(pool.name)
        state[f"pool:{pool.name}"] = wp.model_dump(mode="json", exclude={"status", "updated"})
        for q in client.read_work_queues(work_pool_name=pool.name):
            state[f"queue:{pool.name}/{q.name}"] = q.model_dump(mode="json",
                                                                exclude={"last_polled", "status", "updated"})
    for name in plan.gpu_limits:
        limit = client.read_global_concurrency_limit_by_name(name)
        state[f"limit:{name}"] = limit.model_dump(mode="json", exclude={"active_slots", "slot_decay_per_second"})
    for name in plan.variables:
        state[f"variable:{name}"] = client.read_variable_by_name(name).model_dump(mode="json")
    if plan.zombie is not None:
        for automation in client.read_automations_by_name(plan.zombie.name):
            state[f"automation:{automation.id}"] = automation.model_dump(mode="json")
    for name in plan.secrets:
        doc = client.read_block_document_by_name(name, block_type_slug="secret", include_secrets=False)
        state[f"secret:{name}"] = {"id": str(doc.id), "updated": str(getattr(doc, "updated", ""))}
    return state


def apply_with_client(api_url: str, plan) -> list:
    """Applies ``plan`` on the server at ``api_url`` (its errors become BenchflowError)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            with get_client(sync_client=True) as client:
                return apply_plan(client, plan)
        except httpx.HTTPError as e:
            raise BenchflowError(f"Prefect API at {api_url}: {type(e).__name__}: {e}") from e
