"""`agentdeploy deploy`, `agentdeploy deployments list|get|delete`, `agentdeploy login`."""

from __future__ import annotations

from typing import Annotated

import typer

from agentdeploy import agents
from agentdeploy.cli.output import connect, console, errors_as_exit, table

__all__ = ["register"]

deployments_app = typer.Typer(help="List, get and delete agent deployments.", no_args_is_help=True)


def _env_pairs(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env takes KEY=VALUE; got {item!r}")
        out[key] = value
    return out


def deploy(
    model_name: Annotated[str, typer.Argument(help="Registered model, catalog.schema.model.")],
    model_version: Annotated[int, typer.Argument(help="Version to deploy.")],
    scale_to_zero: Annotated[bool, typer.Option("--scale-to-zero", help="Stop the worker when idle.")] = False,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE; secrets as {{secrets/scope/key}}.")] = None,
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", help="Override the endpoint name.")] = None,
    credentials_block: Annotated[str | None, typer.Option("--as-block", help="Act as this credentials block.")] = None,
) -> None:
    """Deploy a registered agent version (runs the deploy-agent flow; shows each step)."""

    def on_step(name: str, state: str, seconds: float | None) -> None:
        mark = "[green]✓[/green]" if state == "Completed" else f"[red]{state}[/red]"
        timing = f" {seconds:.2f}s" if seconds is not None else ""
        console.print(f"  {mark} {name}{timing}")

    console.print(f"Deploying [bold]{model_name}[/bold] version {model_version} ...")
    with errors_as_exit():
        deployment = agents.deploy(model_name, model_version, scale_to_zero, _env_pairs(env),
                                   endpoint_name=endpoint_name, credentials_block=credentials_block,
                                   client=connect(), on_step=on_step)
    console.print(f"[green]READY[/green] endpoint [bold]{deployment.endpoint_name}[/bold]")
    console.print(f"  query endpoint: {deployment.query_endpoint}")
    console.print(f"  review app:     {deployment.review_app_url}")


def _show(found: list[agents.Deployment], title: str) -> None:
    table(title, ["model", "version", "endpoint", "served entity", "query endpoint"],
          [(d.model_name, d.model_version, d.endpoint_name, d.served_entity_name, d.query_endpoint) for d in found])


@deployments_app.command("list")
def list_cmd() -> None:
    """Every deployment you can see."""
    with errors_as_exit():
        _show(agents.list_deployments(client=connect()), "Deployments")


@deployments_app.command("get")
def get_cmd(model_name: str, model_version: Annotated[int | None, typer.Argument()] = None) -> None:
    """Deployments of one model (or one version)."""
    with errors_as_exit():
        _show(agents.get_deployments(model_name, model_version, client=connect()), model_name)


@deployments_app.command("delete")
def delete_cmd(model_name: str, model_version: Annotated[int | None, typer.Argument()] = None) -> None:
    """Remove a deployed version (or all of a model's); inference tables stay."""
    with errors_as_exit():
        agents.delete_deployment(model_name, model_version, client=connect())
    console.print("deleted")


def login(
    save_block: Annotated[str | None, typer.Option("--save-block", help="Save your identity as this block.")] = None,
) -> None:
    """Save your identity (AGENTDEPLOY_HOST/TOKEN or the credentials file) as a Prefect block,
    so flow runs started from the Prefect UI can act as you."""
    from agentdeploy.orchestration import save_credentials_block, user_block_name

    with errors_as_exit():
        client = connect()
        me = client.get("/api/2.0/preview/scim/v2/Me")
        name = save_block or user_block_name(me.get("userName") or str(me["id"]))
        save_credentials_block(name, client.host, client.token)
    console.print(f"saved credentials block [bold]{name}[/bold] for {me.get('userName')}")


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("login")(login)
    app.add_typer(deployments_app, name="deployments")
