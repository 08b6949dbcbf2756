"""The parameters of a deploy: the contract between the SDK/CLI and the `deploy-agent` flow.

A pydantic model, so the Prefect UI shows it as a form. It holds no secret: environment values
that must stay secret are given as `{{secrets/scope/key}}` references, resolved only inside the
server when the worker starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentdeploy.naming import endpoint_name_for
from agentdeploy.workspace.names import check_full_name, check_name

__all__ = ["DeployParameters", "ADMIN_BLOCK", "DEPLOYMENT_NAME"]

ADMIN_BLOCK = "agentdeploy-admin"
DEPLOYMENT_NAME = "deploy-agent/deploy-agent"


class DeployParameters(BaseModel):
    """What to deploy, and as whom."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(description="Registered model, three parts: catalog.schema.model.")
    model_version: int = Field(ge=1, description="Version of the registered model to deploy.")
    scale_to_zero: bool = Field(default=False, description="Stop the worker when idle; first query is slower.")
    environment_vars: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of the agent. Secret values as {{secrets/scope/key}} references only.",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on the serving endpoint.")
    workload_size: Literal["Small", "Medium", "Large"] = Field(default="Small", description="Served entity size.")
    endpoint_name: str | None = Field(default=None, description="Override of the endpoint name (agents_<model>).")
    description: str | None = Field(default=None, description="Description of the endpoint.")
    deploy_feedback_model: bool = Field(default=True, description="Serve the feedback model on the endpoint.")
    credentials_block: str = Field(
        default=ADMIN_BLOCK,
        description="Name of the WorkspaceCredentials block whose identity performs the deploy.",
    )

    @field_validator("model_name")
    @classmethod
    def _three_parts(cls, value: str) -> str:
        check_full_name("model_name", value, parts=3)
        return value

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name("endpoint_name", value)

    @field_validator("environment_vars")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or not (key[0].isalpha() or key[0] == "_") or not all(c.isalnum() or c == "_" for c in key):
                raise ValueError(f"environment variable name {key!r} must be letters, digits and '_'")
            if key.startswith("AGENTDEPLOY_") or key.startswith("PREFECT_"):
                raise ValueError(f"environment variable {key!r} is reserved for the platform")
        return value

    @property
    def target_endpoint(self) -> str:
        return self.endpoint_name or endpoint_name_for(self.model_name)
