"""The agent's service principal (one per model version, hidden) and its least-privilege grants."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction
from pydantic import BaseModel

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import NotFound
from agentdeploy.workspace.agent_resources import Requirement, grants_for
from tasks.models import ResolvedModel
from tasks.retry import RETRY_DELAYS, Shared, fail_if_injected, retry_transient, undo_on_failure

__all__ = ["AgentPrincipal", "create_principal", "grant_resources", "previous_version_grants"]


class AgentPrincipal(BaseModel):
    id: str
    application_id: str
    display_name: str
    created: bool


@task(name="create-principal", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@undo_on_failure(lambda txn: _delete_principal(txn))
def create_principal(api: AgentDeployClient, model: ResolvedModel, endpoint_name: str,
                     served_entity_name: str) -> AgentPrincipal:
    body = api.post("/api/2.0/agents/principals", json={
        "model_name": model.model_name,
        "model_version": str(model.model_version),
        "endpoint_name": endpoint_name,
        "served_entity_name": served_entity_name,
    })
    principal = AgentPrincipal(id=str(body["id"]), application_id=body["application_id"],
                               display_name=body["display_name"], created=bool(body.get("created")))
    txn = get_transaction()
    if txn is not None:
        txn.set("api", Shared(api))
        txn.set("principal", principal)
    fail_if_injected("create-principal")
    return principal


@create_principal.on_rollback
def _delete_principal(txn: Any) -> None:
    principal: AgentPrincipal | None = txn.get("principal", None)
    if principal is not None and principal.created:  # a principal from an earlier deploy of this version is not ours to delete
        try:
            txn.get("api").value.delete(f"/api/2.0/agents/principals/{principal.id}")
        except NotFound:
            pass


@task(name="grant-resources", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@undo_on_failure(lambda txn: _restore_grants(txn))
def grant_resources(api: AgentDeployClient, principal: AgentPrincipal, model: ResolvedModel) -> list[Requirement]:
    """Exactly the declared resources with the least privilege, plus USE_* on parents."""
    wanted = grants_for(model.requirements)
    answer = api.put(f"/api/2.0/agents/principals/{principal.id}/grants",
                     json={"grants": [g.as_json() for g in wanted]})
    txn = get_transaction()
    if txn is not None:
        txn.set("api", Shared(api))
        txn.set("principal", principal)
        txn.set("previous", answer.get("previous", []))
    fail_if_injected("grant-resources")
    return [Requirement.from_json(g) for g in answer.get("grants", [])]


@grant_resources.on_rollback
def _restore_grants(txn: Any) -> None:
    principal: AgentPrincipal | None = txn.get("principal", None)
    if principal is None or txn.get("previous", None) is None:
        return  # the task failed before changing anything
    try:
        txn.get("api").value.put(f"/api/2.0/agents/principals/{principal.id}/grants",
                           json={"grants": txn.get("previous"), "restore": True})
    except NotFound:
        pass  # the principal went with its own rollback


@task(name="previous-version-grants", cache_policy=NO_CACHE)
def previous_version_grants(api: AgentDeployClient, endpoint_name: str, model: ResolvedModel) -> list[Requirement]:
    """The grants of the highest earlier version on this endpoint (for the summary's diff)."""
    body = api.get("/api/2.0/agents/principals", params={"endpoint_name": endpoint_name})
    earlier = [p for p in body.get("principals", [])
               if p.get("model_name") == model.model_name and int(p["model_version"]) < model.model_version]
    if not earlier:
        return []
    latest = max(earlier, key=lambda p: int(p["model_version"]))
    return [Requirement.from_json(g) for g in latest.get("grants", [])]
