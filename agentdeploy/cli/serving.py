"""`agentdeploy` commands of the serving area: `examples register` (endpoint commands to come)."""

from __future__ import annotations

import typer

from agentdeploy.cli.output import connect, console, errors_as_exit, table
from agentdeploy.settings import get_settings

__all__ = ["register"]

examples_app = typer.Typer(help="The example agents (responder, support_bot).", no_args_is_help=True)


@examples_app.command("register")
def examples_register(
    warehouse_id: str = typer.Option(
        None, "--warehouse-id", help="SQL warehouse for the support bot (default: the demo warehouse)."
    ),
) -> None:
    """Log both example agents to the stack's MLflow registry and register them in the catalog."""
    from agentdeploy.examples import register_examples

    client = connect()
    with errors_as_exit():
        results = register_examples(
            client, get_settings(), warehouse_id=warehouse_id, progress=lambda line: console.print(line)
        )
    table(
        "example agents",
        ["model", "version", "endpoint name", "catalog"],
        [(r["name"], r["version"], r["endpoint_name"], r["securable"]) for r in results.values()],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(examples_app, name="examples")
