"""Resolve the model version: it exists in the registry and the catalog, it is an agent, and what
resources it declared."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import InvalidParameterValue, NotFound
from agentdeploy.workspace.agent_resources import Requirement, declared_requirements
from tasks.retry import RETRY_DELAYS, fail_if_injected, retry_transient

__all__ = ["ResolvedModel", "resolve_model_version", "AGENT_TASKS"]

# MLmodel `metadata.task` -> agent type, as MLflow writes it.
AGENT_TASKS = {
    "agent/v1/responses": "ResponsesAgent",
    "agent/v2/chat": "ChatAgent",
    "agent/v1/chat": "ChatModel",
}
_RESERVED_INPUT = "databricks_options"
_RESERVED_OUTPUT = "databricks_output"


class ResolvedModel(BaseModel):
    model_name: str
    model_version: int
    agent_type: str
    model_uri: str
    run_id: str | None
    resources: dict[str, Any]
    requirements: list[Requirement]


def _schema_names(schema: Any) -> set[str]:
    if schema is None:
        return set()
    try:
        return {str(n) for n in schema.input_names()}
    except Exception:
        return set()


def inspect_model(model: Any) -> tuple[str, dict[str, Any]]:
    """(agent type, declared resources) of an MLflow `Model`; refuses what cannot be deployed."""
    task_name = (model.metadata or {}).get("task")
    agent_type = AGENT_TASKS.get(str(task_name))
    if agent_type is None:
        raise InvalidParameterValue(
            f"The model is not an agent (MLmodel metadata.task is {task_name!r}); log a ResponsesAgent, "
            "ChatAgent or ChatModel."
        )
    signature = model.signature
    if signature is not None:
        if _RESERVED_INPUT in _schema_names(signature.inputs):
            raise InvalidParameterValue(f"The model's input declares a field named '{_RESERVED_INPUT}': "
                                        "the gateway owns that name.")
        if _RESERVED_OUTPUT in _schema_names(signature.outputs):
            raise InvalidParameterValue(f"The model's output declares a field named '{_RESERVED_OUTPUT}': "
                                        "the gateway owns that name.")
    resources = model.resources or {}
    declared_requirements(resources)  # refuses unsupported resource types, naming them
    return agent_type, dict(resources)


@task(name="resolve-model-version", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def resolve_model_version(api: AgentDeployClient, model_name: str, model_version: int) -> ResolvedModel:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    # In the catalog (and visible to the deployer) ...
    api.get(f"/api/2.1/unity-catalog/models/{model_name}")
    # ... and in the registry.
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version(model_name, str(model_version))
    except MlflowException:
        raise NotFound(f"Model {model_name} has no version {model_version} in the MLflow registry.") from None
    model_uri = f"models:/{model_name}/{model_version}"
    agent_type, resources = inspect_model(Model.load(model_uri))
    requirements = [resolve_declared_name(api, r) for r in declared_requirements(resources)]
    fail_if_injected("resolve-model-version")
    return ResolvedModel(model_name=model_name, model_version=model_version, agent_type=agent_type,
                         model_uri=model_uri, run_id=version.run_id, resources=resources,
                         requirements=requirements)


def resolve_declared_name(api: AgentDeployClient, requirement: Requirement) -> Requirement:
    """MLflow declares a SQL warehouse by its id; grants and checks name securables by name."""
    if requirement.securable_type != "sql_warehouse":
        return requirement
    try:
        warehouse = api.get(f"/api/2.0/sql/warehouses/{requirement.full_name}")
    except NotFound:
        return requirement  # maybe declared by name; the permission check reports it if missing
    return Requirement("sql_warehouse", str(warehouse["name"]), requirement.privilege)
