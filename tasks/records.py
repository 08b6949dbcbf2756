"""Record the deployment at the server (and its audit entry), and summarise it as an artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import NotFound
from agentdeploy.workspace.agent_resources import Requirement
from tasks.retry import RETRY_DELAYS, Shared, fail_if_injected, retry_transient, undo_on_failure

__all__ = ["record_deployment", "summarize_deployment", "artifact_key"]


@task(name="record-deployment", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@undo_on_failure(lambda txn: _delete_record(txn))
def record_deployment(api: AgentDeployClient, model_name: str, model_version: int, endpoint_name: str,
                      served_entity_name: str) -> dict[str, Any]:
    query_endpoint = f"{api.host}/serving-endpoints/{endpoint_name}/served-models/{served_entity_name}/invocations"
    try:
        existed = bool(api.get(f"/api/2.0/agents/deployments/{model_name}/versions/{model_version}")
                       .get("chain_deployments"))
    except NotFound:
        existed = False
    body = api.post("/api/2.0/agents/deployments", json={
        "model_name": model_name,
        "model_version": str(model_version),
        "query_endpoint": query_endpoint,
        "endpoint_name": endpoint_name,
        "served_entity_name": served_entity_name,
        "workspace_url": api.host,
    })
    txn = get_transaction()
    if txn is not None:
        txn.set("api", Shared(api))
        txn.set("record", (model_name, model_version, existed))
    fail_if_injected("record-deployment")
    return dict(body["deployed_chain"])


@record_deployment.on_rollback
def _delete_record(txn: Any) -> None:
    record = txn.get("record", None)
    if record is None:
        return
    model_name, model_version, existed = record
    if not existed:
        try:
            txn.get("api").value.delete(f"/api/2.0/agents/deployments/{model_name}/versions/{model_version}")
        except NotFound:
            pass


def artifact_key(endpoint_name: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes: one stable key per endpoint."""
    return "deploy-" + "".join(c if c.isalnum() else "-" for c in endpoint_name.lower())


def summarize_deployment(deployment: dict[str, Any], principal: Any, grants: list[Requirement],
                         previous_grants: list[Requirement], durations: dict[str, float]) -> str:
    added = sorted(set(grants) - set(previous_grants))
    removed = sorted(set(previous_grants) - set(grants))
    lines = [
        f"# Deployment of `{deployment['model_name']}` version {deployment['model_version']}",
        "",
        f"- Endpoint: `{deployment['endpoint_name']}` (served entity `{deployment['served_entity_name']}`)",
        f"- Query endpoint: {deployment['query_endpoint']}",
        f"- Review app: {deployment['review_app_url']}",
        f"- Service principal: `{principal.display_name}` (application id `{principal.application_id}`)",
        "",
        "## Grants of the agent's principal",
        "",
        *[f"- {g.describe()}" for g in grants],
        "",
        "## Changes against the previous version",
        "",
        *([f"- added: {g.describe()}" for g in added] + [f"- removed: {g.describe()}" for g in removed]
          or ["- none" if previous_grants else "- first version on this endpoint"]),
        "",
        "## Steps",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {step} | {seconds:.2f} |" for step, seconds in durations.items()],
    ]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown=markdown, key=artifact_key(deployment["endpoint_name"]),
                             description=f"Deployment of {deployment['model_name']}")
    return markdown
