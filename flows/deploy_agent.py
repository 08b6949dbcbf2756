"""`deploy-agent`: turn a registered agent version into a safe, logged, reviewable endpoint.

The steps run inside one Prefect transaction: when one fails, the earlier ones roll back in
reverse order (each task's undo sits beside it in `tasks/`), and the previous config keeps
serving. Every task is idempotent, so re-running a deploy whose process crashed converges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.transactions import transaction

from agentdeploy.deploy_spec import DeployParameters
from agentdeploy.naming import served_entity_name_for
from blocks.workspace import WorkspaceCredentials
from tasks.credentials import issue_credentials
from tasks.endpoints import provision_endpoint, wait_until_ready
from tasks.models import resolve_model_version
from tasks.permissions import validate_permissions
from tasks.principals import create_principal, grant_resources, previous_version_grants
from tasks.records import record_deployment, summarize_deployment
from tasks.tables import ensure_feedback_model, ensure_inference_tables

__all__ = ["deploy_agent"]

T = TypeVar("T")


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters.get("params") or {}
    if isinstance(params, dict):
        params = DeployParameters.model_validate(params)
    return f"deploy {params.model_name} v{params.model_version}"


@flow(name="deploy-agent", flow_run_name=_run_name, log_prints=False, persist_result=False)
def deploy_agent(params: DeployParameters) -> dict[str, Any]:
    """Deploy a registered agent version to its serving endpoint."""
    logger = get_run_logger()
    api = WorkspaceCredentials.load(params.credentials_block).client()
    endpoint_name = params.target_endpoint
    served_entity = served_entity_name_for(params.model_name, params.model_version)
    durations: dict[str, float] = {}

    def step(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        durations[name] = time.perf_counter() - started
        return result

    with transaction():
        model = step("resolve model version", resolve_model_version, api, params.model_name, params.model_version)
        step("validate permissions", validate_permissions, api, model, params.environment_vars)
        principal = step("create service principal", create_principal, api, model, endpoint_name, served_entity)
        grants = step("grant resources", grant_resources, api, principal, model)
        step("issue credentials", issue_credentials, api, principal, served_entity)
        ai_gateway = step("inference tables", ensure_inference_tables, api, params.model_name, endpoint_name)
        feedback = (step("feedback model", ensure_feedback_model, api, params.model_name)
                    if params.deploy_feedback_model else None)
        step("provision endpoint", provision_endpoint, api, params, served_entity, ai_gateway, feedback)
        step("wait until ready", wait_until_ready, api, endpoint_name, served_entity)
        deployment = step("record deployment", record_deployment, api, params.model_name, params.model_version,
                          endpoint_name, served_entity)

    previous = previous_version_grants(api, endpoint_name, model)
    summarize_deployment(deployment, principal, grants, previous, durations)
    logger.info("deployed %s version %s to %s in %.1fs", params.model_name, params.model_version,
                endpoint_name, sum(durations.values()))
    return deployment
