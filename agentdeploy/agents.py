"""The SDK: `agentdeploy.agents`, drop-in for `databricks.agents` where they overlap.

    from agentdeploy import agents
    deployment = agents.deploy("main.agents.support_bot", 3)
    deployment.query_endpoint, deployment.review_app_url

`deploy()` starts the stack's `deploy-agent` Prefect deployment and returns once the endpoint is
READY: the run is visible (and re-runnable) in the Prefect UI and survives the caller dying. It acts
as the caller: their identity is saved in their own credentials block, which the run names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from agentdeploy.client import AgentDeployClient
from agentdeploy.deploy_spec import DEPLOYMENT_NAME, DeployParameters
from agentdeploy.errors import AgentDeployError, InvalidParameterValue
from agentdeploy.naming import principal_block_name
from agentdeploy.workspace.names import check_full_name

__all__ = [
    "Deployment",
    "DeployFailed",
    "deploy",
    "get_deployments",
    "list_deployments",
    "delete_deployment",
    "PermissionLevel",
    "AgentPermission",
    "set_permissions",
    "get_permissions",
]


class DeployFailed(AgentDeployError):
    """The deploy flow run did not complete; the message holds its final state's message."""

    status_code = 500
    error_code = "DEPLOY_FAILED"


@dataclass(frozen=True)
class Deployment:
    model_name: str
    model_version: str
    endpoint_name: str
    served_entity_name: str
    query_endpoint: str
    endpoint_url: str
    review_app_url: str

    @property
    def rag_app_url(self) -> str:
        """The reference's older name for `review_app_url`."""
        return self.review_app_url

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Deployment:
        return cls(**{k: str(body.get(k, "")) for k in cls.__dataclass_fields__})


def _client(client: AgentDeployClient | None) -> AgentDeployClient:
    return client or AgentDeployClient.from_environment()


def deploy(
    model_name: str,
    model_version: int | str,
    scale_to_zero: bool = False,
    environment_vars: dict[str, str] | None = None,
    *,
    tags: dict[str, str] | None = None,
    workload_size: str = "Small",
    endpoint_name: str | None = None,
    description: str | None = None,
    deploy_feedback_model: bool = True,
    credentials_block: str | None = None,
    timeout: float = 900.0,
    client: AgentDeployClient | None = None,
    on_step: Callable[[str, str, float | None], None] | None = None,
) -> Deployment:
    """Deploy a registered agent version; returns once its endpoint is READY."""
    from agentdeploy.orchestration import run_flow_deployment, save_credentials_block, user_block_name

    try:
        version = int(model_version)
    except (TypeError, ValueError):
        raise InvalidParameterValue(f"'model_version' must be an integer; got {model_version!r}.") from None
    api = _client(client)
    if credentials_block is None:
        me = api.get("/api/2.0/preview/scim/v2/Me")
        credentials_block = user_block_name(me.get("userName") or me.get("displayName") or str(me["id"]))
        save_credentials_block(credentials_block, api.host, api.token)
    try:
        params = DeployParameters(
            model_name=model_name,
            model_version=version,
            scale_to_zero=scale_to_zero,
            environment_vars=environment_vars or {},
            tags=tags or {},
            workload_size=workload_size,  # type: ignore[arg-type]
            endpoint_name=endpoint_name,
            description=description,
            deploy_feedback_model=deploy_feedback_model,
            credentials_block=credentials_block,
        )
    except ValueError as exc:
        raise InvalidParameterValue(str(exc)) from None
    run = run_flow_deployment(DEPLOYMENT_NAME, {"params": params.model_dump()}, timeout=timeout, on_step=on_step)
    state = run.state
    if state is None or not state.is_completed():
        message = state.message if state is not None else "no state"
        raise DeployFailed(f"Deploy of {model_name} version {version} failed (flow run {run.name}): {message}")
    found = get_deployments(model_name, version, client=api)
    if not found:
        raise DeployFailed(f"The deploy flow run {run.name} completed but recorded no deployment.")
    return found[0]


def get_deployments(
    model_name: str, model_version: int | str | None = None, *, client: AgentDeployClient | None = None
) -> list[Deployment]:
    check_full_name("model_name", model_name, parts=3)
    path = f"/api/2.0/agents/deployments/{model_name}"
    if model_version is not None:
        path += f"/versions/{int(model_version)}"
    body = _client(client).get(path)
    return [Deployment.from_json(d) for d in body.get("chain_deployments", [])]


def list_deployments(*, client: AgentDeployClient | None = None) -> list[Deployment]:
    body = _client(client).get("/api/2.0/agents/deployments")
    return [Deployment.from_json(d) for d in body.get("chain_deployments", [])]


def delete_deployment(
    model_name: str, model_version: int | str | None = None, *, client: AgentDeployClient | None = None
) -> None:
    """Remove a deployed version (its served entity, principal and grants), or the whole endpoint.

    Inference tables stay: they are data."""
    from agentdeploy.orchestration import PRINCIPAL_SECRET_BLOCK_TYPE, delete_block

    check_full_name("model_name", model_name, parts=3)
    path = f"/api/2.0/agents/deployments/{model_name}"
    if model_version is not None:
        path += f"/versions/{int(model_version)}"
    answer = _client(client).delete(path)
    for application_id in answer.get("deleted_principals", []):
        # The principal is gone at the server; its OAuth secret block is now useless.
        delete_block(PRINCIPAL_SECRET_BLOCK_TYPE, principal_block_name(application_id))


# Permissions ------------------------------------------------------------------------------------


class PermissionLevel(Enum):
    """An agent's permission levels, as `databricks.agents` names them; each is a level of the
    agent's serving endpoint (CAN_REVIEW: CAN_QUERY plus seeing and rating others' requests)."""

    NO_PERMISSIONS = "NO_PERMISSIONS"
    CAN_VIEW = "CAN_VIEW"
    CAN_QUERY = "CAN_QUERY"
    CAN_REVIEW = "CAN_REVIEW"
    CAN_MANAGE = "CAN_MANAGE"


# Every endpoint level a principal may hold directly (set_permissions replaces them all).
_ENDPOINT_LEVELS = ("CAN_VIEW", "CAN_QUERY", "CAN_REVIEW", "CAN_MANAGE")


@dataclass(frozen=True)
class AgentPermission:
    """A principal's direct level on the agent's endpoint (`IS_OWNER` is shown as CAN_MANAGE)."""

    principal: str
    permission_level: PermissionLevel


def _endpoint_names(model_name: str, api: AgentDeployClient) -> list[str]:
    names = sorted({d.endpoint_name for d in get_deployments(model_name, client=api) if d.endpoint_name})
    if not names:
        raise InvalidParameterValue(f"'model_name': {model_name!r} has no deployment; deploy it first.")
    return names


def set_permissions(
    model_name: str,
    users: list[str],
    permission_level: PermissionLevel | str,
    *,
    client: AgentDeployClient | None = None,
) -> None:
    """Give each of `users` (user names, group names or service principal application ids)
    exactly `permission_level` on the endpoint of every deployment of `model_name`; NO_PERMISSIONS
    takes their direct levels away. Needs CAN_MANAGE on the endpoint."""
    check_full_name("model_name", model_name, parts=3)
    try:
        level = PermissionLevel(permission_level.value if isinstance(permission_level, PermissionLevel)
                                else str(permission_level).upper())
    except ValueError:
        raise InvalidParameterValue(
            f"'permission_level' must be one of {', '.join(p.value for p in PermissionLevel)}; "
            f"got {permission_level!r}."
        ) from None
    if isinstance(users, str) or not users or not all(isinstance(u, str) and u for u in users):
        raise InvalidParameterValue("'users' must be a non-empty list of principal names.")
    api = _client(client)
    add = [] if level is PermissionLevel.NO_PERMISSIONS else [level.value]
    changes = [
        {"principal": user, "add": add, "remove": [lv for lv in _ENDPOINT_LEVELS if lv not in add]}
        for user in users
    ]
    for endpoint in _endpoint_names(model_name, api):
        # The Unity Catalog-style path: one request adds and removes, all or nothing.
        api.patch(
            f"/api/2.1/unity-catalog/permissions/serving_endpoint/{endpoint}",
            json={"changes": changes, "omit_permissions_in_response": True},
        )


def get_permissions(model_name: str, *, client: AgentDeployClient | None = None) -> list[AgentPermission]:
    """Every principal's highest direct level on the agent's endpoint(s), owner included."""
    check_full_name("model_name", model_name, parts=3)
    api = _client(client)
    best: dict[str, int] = {}
    for endpoint in _endpoint_names(model_name, api):
        body = api.get(f"/api/2.0/permissions/serving-endpoints/{endpoint}")
        for entry in body.get("access_control_list", []):
            principal = next(
                (entry[k] for k in ("user_name", "group_name", "service_principal_name") if entry.get(k)), None
            )
            if principal is None:
                continue
            for permission in entry.get("all_permissions", []):
                name = permission.get("permission_level")
                name = "CAN_MANAGE" if name == "IS_OWNER" else name
                if name in _ENDPOINT_LEVELS:
                    rank = _ENDPOINT_LEVELS.index(name)
                    best[principal] = max(best.get(principal, -1), rank)
    return [
        AgentPermission(principal, PermissionLevel(_ENDPOINT_LEVELS[rank])) for principal, rank in sorted(best.items())
    ]
