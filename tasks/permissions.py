"""Validate permissions: the deployer holds everything the agent will be given (no privilege
escalation), and EXECUTE on the model and READ on referenced secret scopes. Every missing
privilege is reported at once; never retried (a denial does not heal)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import PermissionDenied
from agentdeploy.workspace.agent_resources import Requirement, secret_scope_requirements
from tasks.models import ResolvedModel
from tasks.retry import fail_if_injected

__all__ = ["validate_permissions", "deployer_requirements"]


def deployer_requirements(model: ResolvedModel, environment_vars: dict[str, str]) -> list[Requirement]:
    return sorted({
        Requirement("registered_model", model.model_name, "EXECUTE"),
        *model.requirements,
        *secret_scope_requirements(environment_vars),
    })


@task(name="validate-permissions", cache_policy=NO_CACHE)
def validate_permissions(api: AgentDeployClient, model: ResolvedModel, environment_vars: dict[str, str]) -> None:
    checks = [r.as_json() for r in deployer_requirements(model, environment_vars)]
    answer = api.post("/api/2.0/agentdeploy/permissions/check", json={"checks": checks, "fail_on_missing": False})
    missing = answer.get("missing", [])
    if missing:
        raise PermissionDenied(
            f"Cannot deploy {model.model_name} version {model.model_version}: the deployer lacks "
            + "; ".join(missing) + "."
        )
    fail_if_injected("validate-permissions")
