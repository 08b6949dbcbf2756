"""Inference tables on (through the endpoint's AI gateway) and the feedback model registered."""

from __future__ import annotations

import os
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import AlreadyExists, NotFound, Unavailable
from agentdeploy.naming import feedback_model_name_for, inference_table_prefix_for
from tasks.retry import RETRY_DELAYS, Shared, fail_if_injected, retry_transient, undo_on_failure

__all__ = ["ensure_inference_tables", "ensure_feedback_model", "inference_table_config"]


def inference_table_config(model_name: str) -> dict[str, Any]:
    catalog, schema, _ = model_name.split(".")
    return {"inference_table_config": {
        "catalog_name": catalog,
        "schema_name": schema,
        "table_name_prefix": inference_table_prefix_for(model_name),
        "enabled": True,
    }}


@task(name="ensure-inference-tables", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@undo_on_failure(lambda txn: _restore_ai_gateway(txn))
def ensure_inference_tables(api: AgentDeployClient, model_name: str, endpoint_name: str) -> dict[str, Any]:
    """The AI gateway config with inference tables on; applied now if the endpoint exists, else
    by `provision-endpoint` when it creates the endpoint."""
    wanted = inference_table_config(model_name)
    try:
        endpoint = api.get(f"/api/2.0/serving-endpoints/{endpoint_name}")
    except NotFound:
        endpoint = None
    if endpoint is not None:
        current = endpoint.get("ai_gateway") or {}
        table = current.get("inference_table_config") or {}
        if not table.get("enabled"):
            merged = {**current, **wanted}
            api.put(f"/api/2.0/serving-endpoints/{endpoint_name}/ai-gateway", json=merged)
            txn = get_transaction()
            if txn is not None:
                txn.set("api", Shared(api))
                txn.set("endpoint_name", endpoint_name)
                txn.set("previous", current)
        else:
            wanted = current
    fail_if_injected("ensure-inference-tables")
    return wanted


@ensure_inference_tables.on_rollback
def _restore_ai_gateway(txn: Any) -> None:
    previous = txn.get("previous", None)
    if previous is None:
        return  # nothing was changed
    try:
        txn.get("api").value.put(f"/api/2.0/serving-endpoints/{txn.get('endpoint_name')}/ai-gateway", json=previous)
    except NotFound:
        pass


def _latest_registered_version(name: str) -> int:
    """The highest version of a registered model in the MLflow registry; 0 if it has none."""
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri.startswith(("http://", "https://")):
        raise Unavailable(f"MLFLOW_TRACKING_URI must be the stack's tracking server; got {tracking_uri!r}.")
    try:
        response = httpx.get(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/model-versions/search",
                             params={"filter": f"name='{name}'", "max_results": "1000"}, timeout=30)
    except httpx.TransportError as exc:
        raise Unavailable(f"Cannot reach the MLflow tracking server ({type(exc).__name__}).") from None
    if response.status_code >= 500:
        raise Unavailable(f"The MLflow tracking server answered {response.status_code}.")
    if response.status_code != 200:
        return 0
    return max((int(v["version"]) for v in response.json().get("model_versions", [])), default=0)


@task(name="ensure-feedback-model", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def ensure_feedback_model(api: AgentDeployClient, model_name: str) -> dict[str, str]:
    """`{catalog}.{schema}.feedback`: a real registered model version (registered if missing),
    EXECUTE for `account users`. The gateway serves it natively as served model `feedback`."""
    feedback_name = feedback_model_name_for(model_name)
    # Over REST: importing mlflow costs seconds per flow run; it is needed only to log the model.
    version = _latest_registered_version(feedback_name)
    if not version:
        from agentdeploy.serving.feedback import log_feedback_model

        version = log_feedback_model(feedback_name)
    try:
        api.post("/api/2.1/unity-catalog/models", json={
            "catalog_name": feedback_name.split(".")[0],
            "schema_name": feedback_name.split(".")[1],
            "name": "feedback",
            "comment": "Reviewer feedback on agent responses (agentdeploy).",
        })
    except AlreadyExists:
        pass
    api.patch(f"/api/2.1/unity-catalog/permissions/registered_model/{feedback_name}",
              json={"changes": [{"principal": "account users", "add": ["EXECUTE"]}]})
    fail_if_injected("ensure-feedback-model")
    return {"name": feedback_name, "version": str(version)}
