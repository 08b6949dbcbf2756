"""Provision the endpoint (create it, or add the new served entity and move traffic to it once it is
ready) and wait until it is READY."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from agentdeploy.client import AgentDeployClient
from agentdeploy.deploy_spec import DeployParameters
from agentdeploy.errors import DeadlineExceeded, NotFound
from agentdeploy.naming import FEEDBACK_SERVED_MODEL
from tasks.retry import RETRY_DELAYS, Shared, fail_if_injected, retry_transient, undo_on_failure

__all__ = ["provision_endpoint", "wait_until_ready", "endpoint_config"]

_ENTITY_INPUT_FIELDS = ("name", "entity_name", "entity_version", "workload_size", "scale_to_zero_enabled",
                        "environment_vars")


def _as_input(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: entity[k] for k in _ENTITY_INPUT_FIELDS if entity.get(k) is not None}


def endpoint_config(params: DeployParameters, served_entity_name: str, existing: dict[str, Any] | None,
                    feedback: dict[str, str] | None) -> dict[str, Any]:
    """The new config: the new entity at 100%, earlier ones kept at 0%, the feedback model at 0%."""
    new_entity = {
        "name": served_entity_name,
        "entity_name": params.model_name,
        "entity_version": str(params.model_version),
        "workload_size": params.workload_size,
        "scale_to_zero_enabled": params.scale_to_zero,
        "environment_vars": params.environment_vars or None,
    }
    entities = [_as_input(new_entity)]
    for entity in (existing or {}).get("served_entities", []):
        if entity.get("name") != served_entity_name:
            entities.append(_as_input(entity))
    if feedback is not None and not any(e["name"] == FEEDBACK_SERVED_MODEL for e in entities):
        entities.append({"name": FEEDBACK_SERVED_MODEL, "entity_name": feedback["name"],
                         "entity_version": feedback["version"], "workload_size": "Small",
                         "scale_to_zero_enabled": False})
    routes = [{"served_model_name": e["name"], "traffic_percentage": 100 if e["name"] == served_entity_name else 0}
              for e in entities]
    return {"served_entities": entities, "traffic_config": {"routes": routes}}


@task(name="provision-endpoint", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@undo_on_failure(lambda txn: _undo_provision(txn))
def provision_endpoint(api: AgentDeployClient, params: DeployParameters, served_entity_name: str,
                       ai_gateway: dict[str, Any], feedback: dict[str, str] | None) -> dict[str, Any]:
    name = params.target_endpoint
    try:
        existing = api.get(f"/api/2.0/serving-endpoints/{name}")
    except NotFound:
        existing = None
    txn = get_transaction()
    if existing is None:
        body: dict[str, Any] = {
            "name": name,
            "config": endpoint_config(params, served_entity_name, None, feedback),
            "ai_gateway": ai_gateway,
            "tags": [{"key": k, "value": v} for k, v in sorted(params.tags.items())],
        }
        if params.description:
            body["description"] = params.description
        result = api.post("/api/2.0/serving-endpoints", json=body)
        if txn is not None:
            txn.set("undo", ("delete", name, None))
    else:
        previous = existing.get("config") or {}
        config = endpoint_config(params, served_entity_name, previous, feedback)
        result = api.put(f"/api/2.0/serving-endpoints/{name}/config", json=config)
        if txn is not None:
            undo = {"served_entities": [_as_input(e) for e in previous.get("served_entities", [])],
                    "traffic_config": previous.get("traffic_config") or {"routes": []}}
            txn.set("undo", ("restore", name, undo))
    if txn is not None:
        txn.set("api", Shared(api))
    fail_if_injected("provision-endpoint")
    return dict(result)


@provision_endpoint.on_rollback
def _undo_provision(txn: Any) -> None:
    undo = txn.get("undo", None)
    if undo is None:
        return  # the task failed before changing the endpoint
    action, name, previous = undo
    api: AgentDeployClient = txn.get("api").value
    try:
        if action == "delete":
            api.delete(f"/api/2.0/serving-endpoints/{name}")
        else:
            # The server refuses a config change while one is rolling out: let the new entity's
            # rollout settle (ready or failed), then put the previous config back.
            _settled(api, name, timeout=300.0)
            api.put(f"/api/2.0/serving-endpoints/{name}/config", json=previous)
            _wait(api, name, None, timeout=120.0)  # the previous config serves again before we return
    except NotFound:
        pass


def _settled(api: AgentDeployClient, name: str, *, timeout: float) -> None:
    """Wait until no config update of the endpoint is in progress (it may have failed)."""
    deadline = time.monotonic() + timeout
    while True:
        state = api.get(f"/api/2.0/serving-endpoints/{name}").get("state") or {}
        if state.get("config_update") in ("NOT_UPDATING", "UPDATE_FAILED"):
            return
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"Endpoint {name} was still updating after {timeout:.0f}s (state {state}).")
        time.sleep(0.2)


def _wait(api: AgentDeployClient, name: str, served_entity_name: str | None, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        endpoint = api.get(f"/api/2.0/serving-endpoints/{name}")
        state = endpoint.get("state") or {}
        config_state = state.get("config_update")
        served = [e.get("name") for e in (endpoint.get("config") or {}).get("served_entities", [])]
        if config_state == "UPDATE_FAILED":
            raise RuntimeError(f"Endpoint {name} failed to update: {state.get('config_update_message') or state.get('message') or 'no message'}")
        if state.get("ready") == "READY" and config_state == "NOT_UPDATING" and (
                served_entity_name is None or served_entity_name in served):
            return dict(endpoint)
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"Endpoint {name} was not READY within {timeout:.0f}s (state {state}).")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


@task(name="wait-until-ready", cache_policy=NO_CACHE)
def wait_until_ready(api: AgentDeployClient, endpoint_name: str, served_entity_name: str,
                     timeout: float = 600.0) -> dict[str, Any]:
    endpoint = _wait(api, endpoint_name, served_entity_name, timeout=timeout)
    fail_if_injected("wait-until-ready")
    return endpoint
