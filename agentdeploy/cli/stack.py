"""`agentdeploy up | down | status | quickstart`: the local stack from the command line.

`quickstart` is what `make quickstart` runs after `agentdeploy up --detach`: a list of steps
(`QUICKSTART_STEPS`), each idempotent, so running it twice is harmless. Later parts insert their
steps (demo data, a deployed example agent) before the last one, which tells the user how to
get in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import typer

from agentdeploy import stack
from agentdeploy.cli.output import console, err_console, table
from agentdeploy.settings import Settings, get_settings

__all__ = ["register", "QuickstartStep", "QUICKSTART_STEPS"]


def _show_services(status: stack.StackStatus) -> None:
    table(
        "agentdeploy stack",
        ["service", "URL", "health", "pid"],
        [(s.title, s.url, "ok" if s.healthy else "down", s.pid) for s in status.services],
    )


def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Run the stack in the background and return."),
) -> None:
    """Start the local stack (Prefect server, MLflow tracking server, agentdeploy server)."""
    settings = get_settings()
    if stack.is_running(settings):
        console.print(f"The stack of {settings.home_dir} is already up.")
        _show_services(stack.status(settings))
        return
    if detach:
        console.print(f"Starting the stack of {settings.home_dir} in the background "
                      f"(log: {settings.logs_dir / 'stack.log'}) ...")
        try:
            status = stack.up_detached(settings)
        except stack.StackError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        _show_services(status)
        console.print("The stack is up. 'agentdeploy down' stops it; "
                      "'agentdeploy quickstart' shows how to log in.")
        return

    def ready(supervisor: stack.Supervisor) -> None:
        _show_services(stack.status(settings))
        console.print("The stack is up. Ctrl-C stops it.")

    try:
        code = stack.up(settings, on_ready=ready)
    except stack.StackError as exc:  # lost a race with another `up`
        console.print(str(exc))
        return
    raise typer.Exit(code)


def down() -> None:
    """Stop the local stack started with `agentdeploy up --detach` (or in another terminal)."""
    settings = get_settings()
    if stack.down(settings):
        console.print(f"The stack of {settings.home_dir} is stopped.")
    else:
        console.print(f"The stack of {settings.home_dir} was not up.")


def status() -> None:
    """Each service's URL and health; exit code 1 when the stack is not up."""
    settings = get_settings()
    current = stack.status(settings)
    if not current.running:
        console.print(f"The stack of {settings.home_dir} is not up ('agentdeploy up' starts it).")
        if current.services:
            _show_services(current)
        raise typer.Exit(1)
    _show_services(current)
    console.print(f"supervisor pid {current.pid}, state {current.state}")
    if not current.up:
        raise typer.Exit(1)


# quickstart ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuickstartStep:
    """One idempotent step of `agentdeploy quickstart`; `run` raises `typer.Exit` to stop."""

    name: str
    run: Callable[[Settings], None]


def _require_stack(settings: Settings) -> None:
    current = stack.status(settings)
    if not current.up:
        err_console.print(f"[red]error:[/red] the stack of {settings.home_dir} is not up and healthy; "
                          "start it with 'agentdeploy up --detach' (or 'make quickstart').")
        raise typer.Exit(1)
    _show_services(current)


def _show_access(settings: Settings) -> None:
    credentials = settings.credentials_path
    if not credentials.exists():
        err_console.print(f"[red]error:[/red] {credentials} does not exist: the agentdeploy server writes "
                          f"it on its first start; see {settings.logs_dir / 'server.log'}.")
        raise typer.Exit(1)
    host = settings.server_url
    token_cmd = f"python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"token\"])' {credentials}"
    console.print(f"""
[bold]Credentials[/bold]: {credentials} (mode 0600) holds the host and the admin's token.
The CLI and the SDK read it; AGENTDEPLOY_HOST / AGENTDEPLOY_TOKEN override it.

[bold]UIs[/bold]
  MLflow (models, traces)   {settings.mlflow_tracking_uri}
  Prefect (flows, runs)     {settings.prefect_api_url.removesuffix('/api')}
      it asks for the API auth string: cat {settings.prefect_auth_string_path}
  agentdeploy API docs      {host}/api/docs

[bold]CLI[/bold]
  agentdeploy status
  agentdeploy --help

[bold]Python SDK[/bold]
  from agentdeploy.client import AgentDeployClient
  client = AgentDeployClient.from_environment()
  client.get("/api/2.0/preview/scim/v2/Me")

[bold]databricks-sdk[/bold]
  import json, pathlib
  from databricks.sdk import WorkspaceClient
  creds = json.loads(pathlib.Path("{credentials}").read_text())
  w = WorkspaceClient(host=creds["host"], token=creds["token"])
  w.current_user.me().user_name

[bold]curl[/bold] (basic auth with the user name "token", as in the Databricks docs)
  export TOKEN=$({token_cmd})
  curl -u token:$TOKEN {host}/api/2.0/preview/scim/v2/Me

'agentdeploy down' stops the stack; 'make quickstart' again is harmless.""", highlight=False, soft_wrap=True)


# Later parts insert their steps before the last one (`QUICKSTART_STEPS.insert(-1, ...)`).
QUICKSTART_STEPS: list[QuickstartStep] = [
    QuickstartStep("stack", _require_stack),
    QuickstartStep("access", _show_access),
]


def quickstart() -> None:
    """Bootstrap a running stack and show the URLs and how to authenticate (no secret printed)."""
    settings = get_settings()
    for step in QUICKSTART_STEPS:
        step.run(settings)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(quickstart)
