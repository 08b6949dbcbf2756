"""The `agentdeploy` command: one typer app, one module of commands per area.

Each module exposes `register(app)`; this file only puts them together.
"""

from __future__ import annotations

import typer

from agentdeploy.cli import agents, data, identity, logs, serving, stack, workspace

__all__ = ["app", "main"]

app = typer.Typer(
    name="agentdeploy",
    help="Self-hosted agents.deploy(): serving endpoints, inference tables, review app, on Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for area in (stack, identity, workspace, data, serving, agents, logs):
    area.register(app)


@app.callback()
def _point_mlflow_at_the_stack() -> None:
    # Every command that logs or loads models talks to the stack's MLflow tracking server,
    # unless the user set MLFLOW_TRACKING_URI.
    from agentdeploy.stack import configure_mlflow

    configure_mlflow()


@app.command()
def version() -> None:
    """Print the agentdeploy version."""
    from importlib.metadata import version as package_version

    typer.echo(package_version("agentdeploy"))


def main() -> None:
    app()
