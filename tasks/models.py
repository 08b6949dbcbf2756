"""Resolve the model version: it exists in the registry and the catalog, it is an agent, and what
resources it declared."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlparse

import httpx
import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import InvalidParameterValue, NotFound, PermissionDenied, Unavailable
from agentdeploy.workspace.agent_resources import Requirement, declared_requirements
from tasks.retry import RETRY_DELAYS, fail_if_injected, retry_transient

__all__ = ["ResolvedModel", "resolve_model_version", "AGENT_TASKS", "parse_mlmodel", "read_registered_mlmodel"]

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


class _Signature:
    """The part of an MLmodel `signature` the checks read: the input and output field names."""

    def __init__(self, raw: dict[str, Any] | None) -> None:
        self.inputs = _Fields((raw or {}).get("inputs"))
        self.outputs = _Fields((raw or {}).get("outputs"))


class _Fields:
    def __init__(self, schema_json: str | None) -> None:
        try:
            fields = json.loads(schema_json) if schema_json else []
        except ValueError:
            fields = []
        self._names = [f["name"] for f in fields if isinstance(f, dict) and f.get("name")]

    def input_names(self) -> list[str]:
        return self._names


def parse_mlmodel(text: str) -> Any:
    """What `inspect_model` reads of an MLmodel file, without importing mlflow (about 3 s of CPU
    in every flow run's fresh process)."""
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise InvalidParameterValue("The model's MLmodel file is not a mapping.")
    signature = raw.get("signature")
    return SimpleNamespace(metadata=raw.get("metadata") or {}, resources=raw.get("resources") or {},
                           signature=_Signature(signature) if signature else None)


def _mlflow_get(http: httpx.Client, path: str, **params: str) -> httpx.Response:
    try:
        response = http.get(path, params=params)
    except httpx.TransportError as exc:
        raise Unavailable(f"Cannot reach the MLflow tracking server ({type(exc).__name__}).") from None
    if response.status_code >= 500:
        raise Unavailable(f"The MLflow tracking server answered {response.status_code} for {path}.")
    return response


def read_registered_mlmodel(model_name: str, model_version: int) -> tuple[str | None, str]:
    """(run id, MLmodel text) of a registry version, through the tracking server's REST API."""
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri.startswith(("http://", "https://")):
        raise Unavailable(f"MLFLOW_TRACKING_URI must be the stack's tracking server; got {tracking_uri!r}.")
    with httpx.Client(base_url=tracking_uri.rstrip("/"), timeout=30) as http:
        found = _mlflow_get(http, "/api/2.0/mlflow/model-versions/get", name=model_name, version=str(model_version))
        if found.status_code != 200:
            raise NotFound(f"Model {model_name} has no version {model_version} in the MLflow registry.")
        run_id = found.json().get("model_version", {}).get("run_id") or None
        where = _mlflow_get(http, "/api/2.0/mlflow/model-versions/get-download-uri", name=model_name,
                            version=str(model_version))
        artifact_uri = where.json().get("artifact_uri", "") if where.status_code == 200 else ""
        parsed = urlparse(artifact_uri)
        if parsed.scheme != "mlflow-artifacts":
            raise Unavailable(f"The model's artifacts are not served by the tracking server ({artifact_uri!r}).")
        path = quote(parsed.path.strip("/") + "/MLmodel")
        mlmodel = _mlflow_get(http, f"/api/2.0/mlflow-artifacts/artifacts/{path}")
        if mlmodel.status_code != 200:
            raise NotFound(f"Model {model_name} version {model_version} has no MLmodel file.")
        return run_id, mlmodel.text


@task(name="resolve-model-version", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def resolve_model_version(api: AgentDeployClient, model_name: str, model_version: int) -> ResolvedModel:
    # In the catalog (and visible to the deployer) ...
    api.get(f"/api/2.1/unity-catalog/models/{model_name}")
    # ... and in the registry (over REST: importing mlflow would cost seconds per run).
    run_id, mlmodel = read_registered_mlmodel(model_name, model_version)
    model_uri = f"models:/{model_name}/{model_version}"
    agent_type, resources = inspect_model(parse_mlmodel(mlmodel))
    requirements = [resolve_declared_name(api, r) for r in declared_requirements(resources)]
    fail_if_injected("resolve-model-version")
    return ResolvedModel(model_name=model_name, model_version=model_version, agent_type=agent_type,
                         model_uri=model_uri, run_id=run_id, resources=resources,
                         requirements=requirements)


def resolve_declared_name(api: AgentDeployClient, requirement: Requirement) -> Requirement:
    """MLflow declares a SQL warehouse by its id; grants and checks name securables by name."""
    if requirement.securable_type != "sql_warehouse":
        return requirement
    try:
        warehouse = api.get(f"/api/2.0/sql/warehouses/{requirement.full_name}")
    except (NotFound, PermissionDenied):
        # Maybe declared by name; or the deployer may not even see it: then the permission
        # check reports it with every other missing privilege, not alone here.
        return requirement
    return Requirement("sql_warehouse", str(warehouse["name"]), requirement.privilege)
