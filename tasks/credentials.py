"""Credentials for the agent: an OAuth secret kept in a Prefect block (never in the endpoint or
the worker), and a first short-lived access token handed to the server for the entity's file."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import NotFound
from blocks.principal_secret import PrincipalSecret, block_name_for
from tasks.principals import AgentPrincipal
from tasks.retry import RETRY_DELAYS, Shared, fail_if_injected, retry_transient, undo_on_failure

__all__ = ["issue_credentials", "hand_over_token"]


def hand_over_token(api: AgentDeployClient, served_entity_name: str, secret: PrincipalSecret) -> str:
    """Mint a token with the principal's secret and give it to the server; returns its expiry."""
    minted = secret.mint_token()
    api.put(f"/api/2.0/agents/served-entities/{served_entity_name}/credentials",
            json={"access_token": minted.access_token})
    return minted.expires_at.isoformat()


@task(name="issue-credentials", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@undo_on_failure(lambda txn: _revoke_credentials(txn))
def issue_credentials(api: AgentDeployClient, principal: AgentPrincipal, served_entity_name: str) -> str:
    """Returns the token's expiry (ISO 8601); neither the secret nor the token leaves this task."""
    created = api.post(f"/api/2.0/accounts/servicePrincipals/{principal.id}/credentials/secrets", json={})
    secret = PrincipalSecret(host=api.host, principal_id=principal.id, client_id=principal.application_id,
                             secret_id=str(created["id"]), client_secret=created["secret"])
    block_name = block_name_for(principal.application_id)
    previous: PrincipalSecret | None
    try:
        previous = PrincipalSecret.load(block_name)
    except ValueError:
        previous = None
    secret.save(block_name, overwrite=True)
    txn = get_transaction()
    if txn is not None:
        txn.set("api", Shared(api))
        txn.set("principal", principal)
        txn.set("secret_id", secret.secret_id)
        txn.set("block_name", block_name)
        txn.set("previous_block", previous)
        txn.set("served_entity", served_entity_name)
    expires_at = hand_over_token(api, served_entity_name, secret)
    fail_if_injected("issue-credentials")
    return expires_at


@issue_credentials.on_commit
def _delete_replaced_secret(txn: Any) -> None:
    """Once the deploy has committed, an earlier secret of the same principal stops working."""
    previous: PrincipalSecret | None = txn.get("previous_block", None)
    if previous is not None and previous.secret_id != txn.get("secret_id", None):
        try:
            txn.get("api").value.delete(
                f"/api/2.0/accounts/servicePrincipals/{previous.principal_id}/credentials/secrets/{previous.secret_id}")
        except NotFound:
            pass


@issue_credentials.on_rollback
def _revoke_credentials(txn: Any) -> None:
    principal: AgentPrincipal | None = txn.get("principal", None)
    if principal is None or txn.get("secret_id", None) is None:
        return  # the task failed before creating a secret
    api: AgentDeployClient = txn.get("api").value
    try:
        api.delete(f"/api/2.0/accounts/servicePrincipals/{principal.id}/credentials/secrets/{txn.get('secret_id')}")
    except NotFound:
        pass
    if principal.created and txn.get("served_entity", None):
        # The token handed to the server for an entity that never served goes too.
        try:
            api.delete(f"/api/2.0/agents/served-entities/{txn.get('served_entity')}/credentials")
        except NotFound:
            pass
    previous: PrincipalSecret | None = txn.get("previous_block", None)
    if previous is not None and not principal.created:
        previous.save(txn.get("block_name"), overwrite=True)
    else:
        PrincipalSecret.delete(txn.get("block_name"))
