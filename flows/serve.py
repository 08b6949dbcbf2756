"""Serve the stack's flow deployments: what `agentdeploy up` runs beside the servers.

    python -m flows.serve

Registers the agentdeploy block types, saves the admin's WorkspaceCredentials block (from the
stack's credentials file), then serves `deploy-agent` (and the scheduled flows) with a short
runner poll, so a deploy starts in about a second and every run shows in the Prefect UI.
Needs PREFECT_API_URL / PREFECT_API_AUTH_STRING / MLFLOW_TRACKING_URI in the environment (the
stack sets them; `prefect.yaml` declares the same flows for teams that run their own workers).
"""

from __future__ import annotations

import os

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from agentdeploy.client import read_credentials
from agentdeploy.deploy_spec import ADMIN_BLOCK
from agentdeploy.settings import get_settings
from blocks.principal_secret import PrincipalSecret
from blocks.workspace import WorkspaceCredentials
from flows.deploy_agent import deploy_agent
from flows.format_inference_logs import format_inference_logs
from flows.rotate_credentials import rotate_credentials

__all__ = ["main", "deployments"]


def deployments() -> list:  # type: ignore[type-arg]
    settings = get_settings()
    return [
        deploy_agent.to_deployment(
            name="deploy-agent",
            description="Deploy a registered agent version: endpoint, inference tables, feedback, credentials.",
            tags=["agentdeploy"],
        ),
        rotate_credentials.to_deployment(
            name="rotate-credentials",
            description="Renew every agent's short-lived token; rotate OAuth secrets when due.",
            interval=settings.rotation_interval_s,
            # One run at a time: on a busy machine a run can outlast the interval, and overlapping
            # runs filled the runner's slots and starved deploy-agent runs.
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            parameters={"secret_rotation_period_s": settings.secret_rotation_period_s},
            tags=["agentdeploy", "scheduled"],
        ),
        format_inference_logs.to_deployment(
            name="format-inference-logs",
            description="Format inference logs, export traces to MLflow, maintain the tables.",
            interval=settings.format_interval_s,
            # A run that would overlap the previous one is cancelled, never queued behind it.
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="CANCEL_NEW"),
            tags=["agentdeploy", "scheduled"],
        ),
    ]


def register_blocks() -> None:
    WorkspaceCredentials.register_type_and_schema()
    PrincipalSecret.register_type_and_schema()
    host, token = read_credentials()
    WorkspaceCredentials(host=host, token=token).save(ADMIN_BLOCK, overwrite=True)


def main() -> None:
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
    register_blocks()
    serve(*deployments(), limit=8, print_starting_message=False)


if __name__ == "__main__":
    main()
