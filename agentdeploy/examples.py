"""Log and register the example agents of `examples/` (what `agentdeploy examples register` runs).

    register_examples(client, settings)
    -> {"responder": {"name": "main.agents.responder", "version": "3", ...},
        "support_bot": {"name": "main.agents.support_bot", "version": "3", "warehouse_id": ..., ...}}

Both are models-from-code (no weights, no network at logging time). Each is logged to the
stack's MLflow tracking server and registered under its three-part name, and recorded in the
catalog as a `registered_model` securable owned by the caller (CREATE_MODEL on the schema
needed). The support bot is logged with the demo warehouse's id and the responder's endpoint
name (the Databricks rule) in its model config, and declares the resources it reaches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentdeploy import errors
from agentdeploy.client import AgentDeployClient
from agentdeploy.naming import endpoint_name_for
from agentdeploy.settings import Settings

__all__ = [
    "EXAMPLES_DIR",
    "RESPONDER",
    "SUPPORT_BOT",
    "FAQ_TABLE",
    "register_examples",
    "log_responder",
    "log_support_bot",
    "find_demo_warehouse",
]

log = logging.getLogger("agentdeploy.examples")

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
RESPONDER = "main.agents.responder"
SUPPORT_BOT = "main.agents.support_bot"
FAQ_TABLE = "main.docs.faq"
EXPERIMENT = "agentdeploy-examples"
# Pinned instead of inferred: inference imports the model in a subprocess (slow) at logging time.
PIP_REQUIREMENTS = ["mlflow==3.17.2", "httpx"]

RESPONDER_EXAMPLE = {
    "messages": [
        {
            "role": "system",
            "content": "Context:\nRefunds are paid within 5 days. Shipping is free over 50 euros.",
        },
        {"role": "user", "content": "How long do refunds take?"},
    ]
}
SUPPORT_BOT_EXAMPLE = {"input": [{"role": "user", "content": "How do I reset my password?"}]}


def log_responder(registered_model_name: str | None = RESPONDER) -> Any:
    """Log the responder with the current MLflow tracking/registry URIs; the `ModelInfo`."""
    import mlflow

    with mlflow.start_run(run_name="responder"):
        return mlflow.pyfunc.log_model(
            name="responder",
            python_model=str(EXAMPLES_DIR / "responder" / "agent.py"),
            registered_model_name=registered_model_name,
            input_example=RESPONDER_EXAMPLE,
            pip_requirements=PIP_REQUIREMENTS,
        )


def log_support_bot(
    warehouse_id: str,
    *,
    responder_endpoint: str | None = None,
    registered_model_name: str | None = SUPPORT_BOT,
) -> Any:
    """Log the support bot for `warehouse_id`, calling `responder_endpoint`; the `ModelInfo`."""
    import mlflow
    from mlflow.models.resources import DatabricksServingEndpoint, DatabricksSQLWarehouse, DatabricksTable

    endpoint = responder_endpoint or endpoint_name_for(RESPONDER)
    with mlflow.start_run(run_name="support_bot"):
        return mlflow.pyfunc.log_model(
            name="support_bot",
            python_model=str(EXAMPLES_DIR / "support_bot" / "agent.py"),
            registered_model_name=registered_model_name,
            model_config={
                "warehouse_id": warehouse_id,
                "responder_endpoint": endpoint,
                "faq_table": FAQ_TABLE,
            },
            resources=[
                DatabricksSQLWarehouse(warehouse_id=warehouse_id),
                DatabricksTable(table_name=FAQ_TABLE),
                DatabricksServingEndpoint(endpoint_name=endpoint),
            ],
            # No input example: validating one would query the workspace at logging time.
            pip_requirements=PIP_REQUIREMENTS,
        )


def find_demo_warehouse(client: AgentDeployClient) -> str:
    """The id of the demo SQL warehouse: the one named like "demo", else the only/first one."""
    warehouses = client.get("/api/2.0/sql/warehouses").get("warehouses") or []
    if not warehouses:
        raise errors.NotFound(
            "No SQL warehouse exists: load the demo data first (it creates the demo "
            "warehouse), or pass a warehouse id."
        )
    demo = [w for w in warehouses if "demo" in str(w.get("name", "")).lower()]
    return str((demo or warehouses)[0]["id"])


def _register_securable(client: AgentDeployClient, full_name: str, comment: str) -> str:
    """Record `full_name` as a `registered_model` securable owned by the caller; how it went."""
    catalog_name, schema_name, name = full_name.split(".")
    body = {"name": name, "catalog_name": catalog_name, "schema_name": schema_name, "comment": comment}
    try:
        client.post("/api/2.1/unity-catalog/models", json=body)
        return "registered"
    except errors.AlreadyExists:
        return "already registered"
    except errors.NotFound as exc:
        if "No API at" in exc.message:
            return "skipped: this server has no Unity Catalog models API yet"
        # The schema may be missing: create it (idempotent), then try once more.
        try:
            client.post(
                "/api/2.1/unity-catalog/schemas", json={"name": schema_name, "catalog_name": catalog_name}
            )
        except errors.AlreadyExists:
            pass
        except errors.AgentDeployError as schema_exc:
            return f"skipped: {exc.message} (creating {catalog_name}.{schema_name}: {schema_exc.message})"
        try:
            client.post("/api/2.1/unity-catalog/models", json=body)
        except errors.AlreadyExists:
            return "already registered"
        except errors.AgentDeployError as retry_exc:
            return f"skipped: {retry_exc.message}"
        return "registered"
    except errors.AgentDeployError as exc:
        return f"skipped: {exc.message}"


def register_examples(
    client: AgentDeployClient,
    settings: Settings,
    *,
    warehouse_id: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Log and register the responder and the support bot (a new version of each per call)."""
    import mlflow

    say = progress or log.info
    warehouse_id = warehouse_id or find_demo_warehouse(client)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    results: dict[str, dict[str, Any]] = {}

    say(f"logging {RESPONDER} ...")
    info = log_responder()
    results["responder"] = {
        "name": RESPONDER,
        "version": str(info.registered_model_version),
        "model_uri": f"models:/{RESPONDER}/{info.registered_model_version}",
        "endpoint_name": endpoint_name_for(RESPONDER),
        "securable": _register_securable(client, RESPONDER, "Example: extractive responder"),
    }

    say(f"logging {SUPPORT_BOT} (warehouse {warehouse_id}) ...")
    info = log_support_bot(warehouse_id)
    results["support_bot"] = {
        "name": SUPPORT_BOT,
        "version": str(info.registered_model_version),
        "model_uri": f"models:/{SUPPORT_BOT}/{info.registered_model_version}",
        "endpoint_name": endpoint_name_for(SUPPORT_BOT),
        "warehouse_id": warehouse_id,
        "responder_endpoint": endpoint_name_for(RESPONDER),
        "securable": _register_securable(client, SUPPORT_BOT, "Example: FAQ support bot"),
    }
    return results
