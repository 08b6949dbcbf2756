"""Credential rotation: a fresh short-lived token per served entity, and a new OAuth secret per
principal on a longer period. One task per entity so one failure does not stop the others;
transient errors retry with backoff, a denial (deleted principal) is reported, not retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import NotFound, PermissionDenied
from blocks.principal_secret import PrincipalSecret, block_name_for
from tasks.credentials import hand_over_token
from tasks.retry import RETRY_DELAYS, retry_transient

__all__ = ["RotationResult", "list_agent_entities", "rotate_entity", "rotate_secret_if_due"]


class RotationResult(BaseModel):
    served_entity_name: str
    endpoint_name: str
    principal: str
    token_expires_at: str | None = None
    secret_rotated: bool = False
    error: str | None = None


@task(name="list-agent-entities", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def list_agent_entities(api: AgentDeployClient) -> list[dict[str, Any]]:
    """Every deployed served entity, with its principal's fields when it still has one.

    Listed from the deployment records, not the principals: a principal deleted behind the
    deploy's back takes its row with it, and its entity must show up as a failure, not vanish."""
    listed = api.get("/api/2.0/agents/principals").get("principals", [])
    principals = {p["served_entity_name"]: p for p in listed}
    entities: dict[str, dict[str, Any]] = {}
    for record in api.get("/api/2.0/agents/deployments").get("chain_deployments", []):
        name = record["served_entity_name"]
        principal = principals.get(name)
        entities[name] = {"served_entity_name": name, "endpoint_name": record["endpoint_name"],
                          "display_name": principal["display_name"] if principal else "(none)",
                          "application_id": principal["application_id"] if principal else None}
    return list(entities.values())


def rotate_secret_if_due(api: AgentDeployClient, secret: PrincipalSecret, block_name: str,
                         period: timedelta) -> PrincipalSecret:
    """Create the new secret, save it in the block, then delete the old one at the server, so the
    old one stops working at once (in that order: a crash between steps leaves a working block)."""
    if datetime.now(UTC) - secret.created_at < period:
        return secret
    created = api.post(f"/api/2.0/accounts/servicePrincipals/{secret.principal_id}/credentials/secrets", json={})
    fresh = PrincipalSecret(host=secret.host, principal_id=secret.principal_id, client_id=secret.client_id,
                            secret_id=str(created["id"]), client_secret=created["secret"])
    fresh.save(block_name, overwrite=True)
    try:
        api.delete(f"/api/2.0/accounts/servicePrincipals/{secret.principal_id}/credentials/secrets/{secret.secret_id}")
    except NotFound:
        pass
    return fresh


@task(name="rotate-entity", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
      task_run_name="rotate {entity[served_entity_name]}")
def rotate_entity(api: AgentDeployClient, entity: dict[str, Any], secret_period_s: float) -> RotationResult:
    if not entity.get("application_id"):
        raise PermissionDenied(
            f"Served entity {entity['served_entity_name']} has no service principal any more (deleted?): "
            "its token cannot be renewed; it serves until the current one expires.")
    block_name = block_name_for(entity["application_id"])
    secret = PrincipalSecret.load(block_name)
    rotated_from = secret.secret_id
    secret = rotate_secret_if_due(api, secret, block_name, timedelta(seconds=secret_period_s))
    expires_at = hand_over_token(api, entity["served_entity_name"], secret)
    return RotationResult(served_entity_name=entity["served_entity_name"], endpoint_name=entity["endpoint_name"],
                          principal=entity["display_name"], token_expires_at=expires_at,
                          secret_rotated=secret.secret_id != rotated_from)
